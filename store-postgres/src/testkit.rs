//! Test support (feature `testkit`): a throwaway database on a real server, migrated, dropped
//! afterwards (like `#[sqlx::test]`, for any test runner).

use std::str::FromStr;

use sqlx::{postgres::PgConnectOptions, Connection, Executor, PgConnection};

use crate::{PgEventStore, PgStoreOptions};

/// The server tests use: `DATABASE_URL`, or `postgres://root@127.0.0.1:5432/test`.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned())
}

/// A fresh database named `annals_test_<uuid>` on the server at [`database_url`], with the
/// annals schema migrated. Drop it with [`drop_database`](TestDatabase::drop_database) at
/// the end of the test; one that is dropped without it (a failed test) is dropped from a
/// thread of its own.
///
/// ```no_run
/// # async fn demo() {
/// use annals_store_postgres::testkit::TestDatabase;
///
/// let db = TestDatabase::new().await;
/// let store = db.store().clone();
/// // ... append, run projections, assert ...
/// db.drop_database().await;
/// # }
/// ```
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    options: PgConnectOptions,
    store: Option<PgEventStore>,
}

async fn admin() -> PgConnection {
    let url = database_url();
    match PgConnection::connect(&url).await {
        Ok(conn) => conn,
        Err(e) => panic!(
            "Postgres tests need a server: cannot connect with DATABASE_URL ({}): {e}",
            PgConnectOptions::from_str(&url).map_or("unparsable".into(), |o| format!(
                "{}:{}",
                o.get_host(),
                o.get_port()
            ))
        ),
    }
}

impl TestDatabase {
    /// Creates and migrates a database, with a 20-connection pool.
    ///
    /// # Panics
    ///
    /// When the server cannot be reached or refuses: these are tests.
    pub async fn new() -> Self {
        Self::with_options(PgStoreOptions::new().max_connections(20)).await
    }

    /// Creates and migrates a database, with these store options.
    ///
    /// # Panics
    ///
    /// As [`new`](TestDatabase::new).
    pub async fn with_options(options: PgStoreOptions) -> Self {
        let name = format!("annals_test_{}", uuid::Uuid::now_v7().simple());
        admin()
            .await
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("CREATE DATABASE");
        let connect = PgConnectOptions::from_str(&database_url())
            .expect("DATABASE_URL")
            .database(&name);
        let url = format!(
            "{}/{name}",
            database_url().rsplit_once('/').map_or("", |(s, _)| s)
        );
        let store = PgEventStore::connect_with(&url, options)
            .await
            .expect("connect to the test database");
        store.migrate().await.expect("migrate the test database");
        Self {
            name,
            options: connect,
            store: Some(store),
        }
    }

    /// The migrated store.
    ///
    /// # Panics
    ///
    /// Never after construction (the store is only taken by `drop_database`).
    pub fn store(&self) -> &PgEventStore {
        self.store
            .as_ref()
            .expect("the store lives until drop_database")
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connect options for the database (for a second pool, a listener, a child process).
    pub fn connect_options(&self) -> PgConnectOptions {
        self.options.clone()
    }

    /// A URL for the database (for a child process's `--database-url`).
    pub fn url(&self) -> String {
        let base = database_url();
        let server = base.rsplit_once('/').map_or(base.as_str(), |(s, _)| s);
        format!("{server}/{}", self.name)
    }

    /// Closes the store's pool and drops the database.
    ///
    /// # Panics
    ///
    /// When the server refuses.
    pub async fn drop_database(mut self) {
        if let Some(store) = self.store.take() {
            store.pool().close().await;
        }
        drop_named(&self.name).await;
        self.name.clear();
    }
}

async fn drop_named(name: &str) {
    admin()
        .await
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .expect("DROP DATABASE");
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return;
        }
        let name = std::mem::take(&mut self.name);
        // A test that failed before drop_database: drop it from a runtime of its own.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(drop_named(&name));
            }
        })
        .join();
    }
}

/// An application role for tests of least-privilege deployments: a group role that
/// [`PgEventStore::grant_app_role`] sets up in each test database, and a login role in
/// it that the test's store connects as. Roles belong to the whole server: drop the
/// databases first, then [`drop_roles`](TestAppRole::drop_roles).
///
/// ```no_run
/// # async fn demo() {
/// use annals_store_postgres::testkit::{TestAppRole, TestDatabase};
///
/// let db = TestDatabase::new().await;
/// let role = TestAppRole::new().await;
/// let app = role.store(&db).await; // appends and reads as the application role
/// # drop(app);
/// db.drop_database().await;
/// role.drop_roles().await;
/// # }
/// ```
#[derive(Debug)]
pub struct TestAppRole {
    group: String,
    login: String,
}

impl TestAppRole {
    /// Creates the login role `annals_test_login_<uuid>` (the group role is created by
    /// the first [`grant`](TestAppRole::grant)).
    ///
    /// # Panics
    ///
    /// When the server refuses (the `DATABASE_URL` role must be allowed to create roles).
    pub async fn new() -> Self {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let role = Self {
            group: format!("annals_test_app_{id}"),
            login: format!("annals_test_login_{id}"),
        };
        admin()
            .await
            .execute(format!("CREATE ROLE {} LOGIN", role.login).as_str())
            .await
            .expect("CREATE ROLE");
        role
    }

    /// The group role the grants go to.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The login role a test connects as.
    pub fn login(&self) -> &str {
        &self.login
    }

    /// Grants the group role on `db` (as its owner) and makes the login role a member.
    ///
    /// # Panics
    ///
    /// When the server refuses.
    pub async fn grant(&self, db: &TestDatabase) {
        db.store()
            .grant_app_role(&self.group)
            .await
            .expect("grant_app_role");
        admin()
            .await
            .execute(format!("GRANT {} TO {}", self.group, self.login).as_str())
            .await
            .expect("GRANT the group to the login role");
    }

    /// A URL for `db` as the login role.
    pub fn url(&self, db: &TestDatabase) -> String {
        let options = db.connect_options();
        let (host, port) = (options.get_host().to_owned(), options.get_port());
        format!("postgres://{}@{host}:{port}/{}", self.login, db.name())
    }

    /// [`grant`](TestAppRole::grant)s, then connects to `db` as the login role.
    ///
    /// # Panics
    ///
    /// When the server refuses.
    pub async fn store(&self, db: &TestDatabase) -> PgEventStore {
        self.grant(db).await;
        PgEventStore::connect_with(
            &self.url(db),
            PgStoreOptions::new()
                .schema(db.store().schema())
                .max_connections(20),
        )
        .await
        .expect("connect as the application role")
    }

    /// Drops both roles (after the databases they were granted in are dropped).
    ///
    /// # Panics
    ///
    /// When the server refuses (a database still holds privileges of the group role).
    pub async fn drop_roles(self) {
        let mut admin = admin().await;
        for role in [&self.login, &self.group] {
            admin
                .execute(format!("DROP ROLE IF EXISTS {role}").as_str())
                .await
                .expect("DROP ROLE");
        }
    }
}

/// The head of `store`'s log once every committed event is visible to tailing readers.
///
/// [`EventStore::head`](annals_core::EventStore::head) stops at the oldest transaction still
/// running anywhere on the server (that is what keeps the log gap-free), and tests running
/// in parallel hold such transactions: `CREATE DATABASE` and `DROP DATABASE` hold one for
/// a good fraction of a second. A test that waits for "everything appended so far" must not
/// take a held-back head for the end: this waits until `head` reaches the newest committed
/// event.
///
/// # Panics
///
/// When the server fails, or after 60 s.
pub async fn settled_head(store: &PgEventStore) -> annals_core::Position {
    use annals_core::EventStore;
    let newest = format!(
        "SELECT transaction_id::text::bigint, global_position FROM {}.events
         ORDER BY transaction_id DESC, global_position DESC LIMIT 1",
        store.inner.quoted_schema
    );
    let row: Option<(i64, i64)> = sqlx::query_as(&newest)
        .fetch_optional(store.pool())
        .await
        .expect("the newest event");
    let Some((commit, sequence)) = row else {
        return annals_core::Position::START;
    };
    let target = annals_core::Position::new(commit as u64, sequence as u64);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let head = store.head().await.expect("head");
        if head >= target {
            return head;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log's horizon stayed behind {target} for 60 s (a transaction left open?)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
