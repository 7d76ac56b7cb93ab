use std::{
    path::PathBuf,
    str::FromStr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use annals_core::{Error, Result};
use sqlx::{
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions, PgSslMode},
    Connection, PgConnection, PgPool,
};

use crate::{append::GroupCommit, error::from_sqlx, listen::Wakeups, sql::Queries, ConnectError};

pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Session advisory lock taken while migrating, so concurrent `migrate()` calls (from
/// several processes) run one after the other. ("annals" in ASCII.)
const MIGRATE_LOCK: i64 = 0x616e_6e61_6c73;

/// How a [`PgEventStore`] is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgStoreOptions {
    schema: String,
    pub(crate) notify: bool,
    pub(crate) group_commit: bool,
    pub(crate) group_committers: usize,
    pub(crate) group_above: usize,
    pub(crate) poll_interval: Duration,
    max_connections: u32,
    tls: Tls,
}

impl Default for PgStoreOptions {
    fn default() -> Self {
        Self {
            schema: "annals".to_owned(),
            notify: true,
            group_commit: false,
            group_committers: 1,
            group_above: 8,
            poll_interval: Duration::from_millis(500),
            max_connections: 16,
            tls: Tls::default(),
        }
    }
}

impl PgStoreOptions {
    /// Defaults: schema `annals`, NOTIFY on append, poll every 500 ms, 16 connections.
    pub fn new() -> Self {
        Self::default()
    }

    /// The Postgres schema holding the store's tables: lowercase ASCII letters, digits and
    /// `_`, starting with a letter or `_`, at most 40 characters (checked on use).
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Whether appends send a NOTIFY so live readers in other processes wake up at once
    /// (default true). It is sent after commit by a background task, one per burst of
    /// appends, so it never serializes appends. Readers in the same process are woken
    /// directly either way, and without it
    /// [`wait_for_events`](annals_core::EventStore::wait_for_events) still works by polling.
    #[must_use]
    pub fn notify(mut self, notify: bool) -> Self {
        self.notify = notify;
        self
    }

    /// Whether concurrent appends share commits (default false). With it on, one-stream
    /// appends made at the same time from this process (one [`PgEventStore`] and its
    /// clones) are written by one transaction: a committer task takes every append queued
    /// while the previous group committed, so a lone append waits for nobody and a busy
    /// store pays one commit (one WAL flush) for many appends. Each append keeps its own
    /// outcome: its expected-version check, conflict error and positions are what they
    /// would be had the appends run one after another in queue order, and appends to one
    /// stream in a group chain their versions.
    ///
    /// A group that fails as a whole (a lost connection, a malformed payload in one of its
    /// appends) never fails its appends with another's error: each runs again on its own,
    /// idempotently by event id, so an append its lost commit did store is answered with
    /// its original result. If the server stays unreachable, the append fails with
    /// [`OutcomeUnknown`](crate::OutcomeUnknown) where the commit may have happened, and
    /// with the connection error where it cannot have. Appends to several streams, and
    /// [`append_in`](PgEventStore::append_in), run as without it.
    ///
    /// It pays off when many tasks append at once, and only then: one group commits at a
    /// time, where a few connections of their own keep every core busy. So appends are
    /// grouped only while more than [`group_commit_above`](Self::group_commit_above) of
    /// them are in flight in this process; the others take the ordinary path, alongside
    /// the group. Measured on a 2-core machine with a local server (BENCHMARKS.md), 64
    /// tasks appending one event each ran 3.3 times as fast as plain INSERTs from 8
    /// connections and 2.35 times as fast as from 64 (annals without it: 0.8); 16 tasks
    /// 0.95, 8 tasks as without it. Off by default.
    #[must_use]
    pub fn group_commit(mut self, on: bool) -> Self {
        self.group_commit = on;
        self
    }

    /// With [`group_commit`](Self::group_commit) on, group appends only while more than
    /// `n` appends (of any shape, through this store and its clones) are in flight
    /// (default 8; 0: always). Grouping every append was slower than this mix at every
    /// concurrency measured (64 tasks: 2.2x plain INSERTs against 3.3x). Where the
    /// ordinary path is faster than one group at a time depends on the machine: measure
    /// (`cargo bench -p annals-benches --bench scaling`).
    #[must_use]
    pub fn group_commit_above(mut self, n: usize) -> Self {
        self.group_above = n;
        self
    }

    /// How many groups may commit at once when [`group_commit`](Self::group_commit) is on
    /// (default 1). With more, the next group is sent while one commits, so the server
    /// is not idle during each group's round trip and WAL flush, but the groups are
    /// smaller: on a local server (BENCHMARKS.md) two committers were slower than one.
    /// Try more against a server far away. Each committer holds a connection while it
    /// commits.
    #[must_use]
    pub fn group_committers(mut self, committers: usize) -> Self {
        self.group_committers = committers.max(1);
        self
    }

    /// How often live readers re-check the log when no notification arrives.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Pool size used by [`PgEventStore::connect_with`].
    #[must_use]
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max;
        self
    }

    /// How to use TLS, overriding the URL's `sslmode` (default: as the URL says, or
    /// `prefer` when it says nothing, as libpq does).
    #[must_use]
    pub fn ssl_mode(mut self, mode: SslMode) -> Self {
        self.tls.mode = Some(mode);
        self
    }

    /// The certificate authority (a PEM file) that `verify-ca` and `verify-full` check the
    /// server's certificate against, overriding the URL's `sslrootcert`. Without either,
    /// the Mozilla root store bundled with annals is used.
    #[must_use]
    pub fn ssl_root_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.root_cert = Some(path.into());
        self
    }

    /// A client certificate and its private key (PEM files) for servers that authenticate
    /// clients by certificate, overriding the URL's `sslcert` and `sslkey`.
    #[must_use]
    pub fn ssl_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls.client_cert = Some((cert.into(), key.into()));
        self
    }

    fn quoted_schema(&self) -> Result<String> {
        quoted_identifier("schema", &self.schema, 40)
    }
}

/// Checks that `name` is a plain lowercase identifier (so it can be formatted into SQL) and
/// quotes it.
pub(crate) fn quoted_identifier(what: &str, name: &str, max: usize) -> Result<String> {
    let valid = !name.is_empty()
        && name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with("pg_");
    if valid {
        Ok(format!("\"{name}\""))
    } else {
        Err(Error::InvalidInput(format!(
            "invalid {what} name {name:?}: use lowercase letters, digits and _, at most {max}, not starting with pg_"
        )))
    }
}

/// Whether and how the connection to PostgreSQL is encrypted and the server checked: the
/// `sslmode` values of libpq. Managed PostgreSQL services need at least `Require`; use
/// `VerifyFull` with the provider's certificate authority to also check you talk to the
/// right server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it (libpq's default).
    Prefer,
    /// Always use TLS; do not check the server's certificate.
    Require,
    /// Always use TLS, and check that the server's certificate is signed by the
    /// certificate authority ([`PgStoreOptions::ssl_root_cert`]).
    VerifyCa,
    /// As `VerifyCa`, and check that the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    fn to_sqlx(self) -> PgSslMode {
        match self {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        }
    }
}

/// TLS settings that override the URL's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Tls {
    mode: Option<SslMode>,
    root_cert: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
}

impl Tls {
    fn apply(&self, mut connect: PgConnectOptions) -> PgConnectOptions {
        if let Some(mode) = self.mode {
            connect = connect.ssl_mode(mode.to_sqlx());
        }
        if let Some(root) = &self.root_cert {
            connect = connect.ssl_root_cert(root);
        }
        if let Some((cert, key)) = &self.client_cert {
            connect = connect.ssl_client_cert(cert).ssl_client_key(key);
        }
        connect
    }
}

/// The PostgreSQL event store (and snapshot store). Cheap to clone: clones share the pool.
///
/// Build it with [`connect`](PgEventStore::connect) or over your own pool with
/// [`new`](PgEventStore::new), then call [`migrate`](PgEventStore::migrate) once at start.
#[derive(Clone, Debug)]
pub struct PgEventStore {
    pub(crate) pool: PgPool,
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) sql: Queries,
    pub(crate) options: PgStoreOptions,
    pub(crate) quoted_schema: String,
    pub(crate) wakeups: Wakeups,
    /// The group committer, started by the first grouped append.
    pub(crate) group: OnceLock<GroupCommit>,
    /// Appends in flight through this store and its clones (for `group_commit_above`).
    pub(crate) appending: std::sync::atomic::AtomicUsize,
}

impl PgEventStore {
    /// A store over `pool` in the default schema `annals`. No I/O.
    ///
    /// The pool's connections must use READ COMMITTED, Postgres' default (a pool built by
    /// [`connect`](PgEventStore::connect) sets it explicitly).
    pub fn new(pool: PgPool) -> Self {
        // The default schema name is valid by construction.
        Self::build(pool, PgStoreOptions::default(), "\"annals\"".to_owned())
    }

    /// A store over `pool` with `options`. No I/O.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an invalid schema name.
    pub fn with_options(pool: PgPool, options: PgStoreOptions) -> Result<Self> {
        let quoted = options.quoted_schema()?;
        Ok(Self::build(pool, options, quoted))
    }

    fn build(pool: PgPool, options: PgStoreOptions, quoted_schema: String) -> Self {
        let channel = format!("annals_events.{}", options.schema);
        Self {
            inner: Arc::new(Inner {
                sql: Queries::new(&quoted_schema),
                wakeups: Wakeups::new(pool.clone(), channel),
                options,
                quoted_schema,
                group: OnceLock::new(),
                appending: std::sync::atomic::AtomicUsize::new(0),
            }),
            pool,
        }
    }

    /// Connects to `url` (`postgres://user:password@host:port/database`) with default
    /// options.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a malformed URL, [`Error::Backend`] wrapping a
    /// [`ConnectError`] (naming host, port and database, never the password) when the
    /// server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, PgStoreOptions::default()).await
    }

    /// Connects to `url` with `options`.
    ///
    /// # Errors
    ///
    /// As [`connect`](PgEventStore::connect), plus an invalid schema name.
    pub async fn connect_with(url: &str, options: PgStoreOptions) -> Result<Self> {
        options.quoted_schema()?;
        let malformed = |reason: &dyn std::fmt::Display| {
            // The URL may hold a password: never echo it, only the parser's reason.
            Error::InvalidInput(format!(
                "malformed PostgreSQL URL (expected postgres://user@host:port/database): {reason}"
            ))
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(malformed(
                &"it must start with postgres:// or postgresql://",
            ));
        }
        // Appends rely on READ COMMITTED (each statement of append_streams sees the rows
        // committed before it); a server default of REPEATABLE READ would turn concurrent
        // appends into serialization failures. (The server splits `options` at spaces
        // unless escaped, and sqlx passes the value as given.) NOTICEs ("already exists,
        // skipping" from every idempotent setup) are not worth a log line each: only
        // warnings and errors come back from the server.
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| malformed(&e))?
            .options([
                ("default_transaction_isolation", r"read\ committed"),
                ("client_min_messages", "warning"),
            ]);
        let connect = options.tls.apply(connect);
        let target = format!(
            "{}:{}/{}",
            connect.get_host(),
            connect.get_port(),
            connect.get_database().unwrap_or("(default database)")
        );
        // One direct connection first: a server that is down or refuses us fails at once
        // with its real error, instead of after the pool's acquire timeout.
        let probe = PgConnection::connect_with(&connect)
            .await
            .map_err(|e| Error::backend(ConnectError::new(target, e)))?;
        let _ = probe.close().await;
        // No ping before each statement (a round trip, 12-30 % of a one-event append): the
        // store runs its operations again when a connection turns out dead (see
        // `retry.rs`).
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .connect_lazy_with(connect);
        Self::with_options(pool, options)
    }

    /// Creates the schema, tables and functions, or brings them up to date. Idempotent, and
    /// safe to call from several processes at once (they take turns on an advisory lock).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the database refuses (for example missing privileges), or
    /// when the stored events carry transaction ids from another cluster (a restore from a
    /// dump into a fresh cluster), which would break tailing reads.
    #[tracing::instrument(name = "annals.migrate", skip_all, fields(schema = %self.inner.options.schema))]
    pub async fn migrate(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(from_sqlx)?;
        // This connection's search_path changes below: close it afterwards rather than
        // hand it back to the pool.
        let outcome = async {
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(MIGRATE_LOCK)
                .execute(&mut *conn)
                .await?;
            // A validated, quoted identifier (see `PgStoreOptions::schema`).
            let schema = &self.inner.quoted_schema;
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .execute(&mut *conn)
                .await?;
            sqlx::query(&format!("SET search_path TO {schema}"))
                .execute(&mut *conn)
                .await?;
            MIGRATOR
                .run_direct(&mut *conn)
                .await
                .map_err(sqlx::Error::from)?;
            let foreign: Option<bool> = sqlx::query_scalar(include_str!("sql/foreign_xids.sql"))
                .fetch_optional(&mut *conn)
                .await?;
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(MIGRATE_LOCK)
                .execute(&mut *conn)
                .await?;
            Ok::<_, sqlx::Error>(foreign == Some(true))
        }
        .await;
        drop(conn.detach());
        let foreign = outcome.map_err(|e| {
            if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42501") {
                Error::backend(format!(
                    "{e}: migrate creates and alters the schema {}: run it as the schema's owner \
                     (an application role set up by grant_app_role cannot)",
                    self.schema()
                ))
            } else {
                from_sqlx(e)
            }
        })?;
        if foreign {
            return Err(Error::backend(
                "the events table holds transaction ids this PostgreSQL cluster has not reached \
                 (restored from another cluster?): tailing readers would order new events before \
                 existing checkpoints. Advance the cluster's transaction counter past the largest \
                 stored transaction_id (pg_resetwal -x) before using this database",
            ));
        }
        Ok(())
    }

    /// The connection pool (for projections writing read tables in the same database).
    ///
    /// Appends run on it too, so a connection returned to it inside an open transaction
    /// would take the next append into that transaction. sqlx 0.8's `Pool::begin` does
    /// exactly that when its future is dropped after sending BEGIN and before the reply
    /// (a task aborted or timed out at that moment). If your code begins transactions on
    /// this pool and may be cancelled, begin them on a task of their own, as annals'
    /// projections do: `tokio::spawn(async move { pool.begin().await })`.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema holding the store's tables.
    pub fn schema(&self) -> &str {
        &self.inner.options.schema
    }
}
