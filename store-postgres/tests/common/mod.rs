//! Fresh databases for the Postgres tests, on the server at `DATABASE_URL`
//! (default `postgres://root@127.0.0.1:5432/test`). No mocks: every test talks to a real
//! server, and fails loudly when it cannot.

#![allow(dead_code, unreachable_pub)]

pub mod proxy;

use std::{
    str::FromStr,
    sync::{Arc, Mutex},
};

use annals_store_postgres::{PgEventStore, PgStoreOptions};
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    Connection, Executor, PgConnection,
};

/// A small JSON event of type `t` carrying `n`.
pub fn event(n: u64) -> annals_core::NewEvent {
    annals_core::NewEvent::new(
        "t",
        1,
        annals_core::Encoding::Json,
        format!(r#"{{"n":{n}}}"#).into_bytes(),
    )
}

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned())
}

async fn admin() -> PgConnection {
    let url = database_url();
    match PgConnection::connect(&url).await {
        Ok(conn) => conn,
        Err(e) => panic!(
            "the Postgres tests need a server: cannot connect with DATABASE_URL ({}): {e}",
            PgConnectOptions::from_str(&url)
                .map_or("unparsable".into(), |o| o.get_host().to_owned())
        ),
    }
}

/// Databases made by a test, dropped by [`TestDatabases::drop_all`].
#[derive(Clone, Default)]
pub struct TestDatabases {
    names: Arc<Mutex<Vec<String>>>,
}

impl TestDatabases {
    /// Creates an empty database and returns its connect options.
    pub async fn create(&self) -> PgConnectOptions {
        let name = format!("annals_test_{}", uuid::Uuid::now_v7().simple());
        admin()
            .await
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("CREATE DATABASE");
        self.names.lock().expect("lock").push(name.clone());
        PgConnectOptions::from_str(&database_url())
            .expect("DATABASE_URL")
            .database(&name)
    }

    /// A migrated store in a fresh database.
    pub async fn store(&self) -> PgEventStore {
        self.store_with(PgStoreOptions::new()).await
    }

    /// A migrated store in a fresh database, with `options`.
    pub async fn store_with(&self, options: PgStoreOptions) -> PgEventStore {
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .connect_with(self.create().await)
            .await
            .expect("connect to the fresh database");
        let store = PgEventStore::with_options(pool, options).expect("options");
        store.migrate().await.expect("migrate");
        store
    }

    /// A migrated store in a fresh database, built by [`PgEventStore::connect_with`] (its
    /// own pool: no ping before each statement) with `options`.
    pub async fn connected_store(&self, options: PgStoreOptions) -> PgEventStore {
        let name = self
            .create()
            .await
            .get_database()
            .expect("database name")
            .to_owned();
        let url = database_url();
        let (base, _) = url.rsplit_once('/').expect("a database in DATABASE_URL");
        let store = PgEventStore::connect_with(&format!("{base}/{name}"), options)
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        store
    }

    pub async fn drop_all(&self) {
        let names = std::mem::take(&mut *self.names.lock().expect("lock"));
        let mut admin = admin().await;
        for name in names {
            admin
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await
                .expect("DROP DATABASE");
        }
    }
}

/// While switched on, a COMMIT that inserted events into `store`'s database is held open
/// for 30 s (a deferred constraint trigger sleeps, wait event `PgSleep`): how a test kills
/// a server process in the middle of a commit.
pub async fn install_slow_commits(store: &PgEventStore, on: bool) {
    for ddl in [
        "CREATE TABLE public.slow_commit (slow boolean NOT NULL)",
        "INSERT INTO public.slow_commit VALUES (false)",
        "CREATE FUNCTION public.slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF (SELECT slow FROM public.slow_commit) THEN
                 PERFORM pg_sleep(30);
             END IF;
             RETURN NULL;
         END $$",
        "CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON annals.events
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.slow_commit()",
    ] {
        store.pool().execute(ddl).await.expect("test trigger");
    }
    slow_commits(store, on).await;
}

/// Switches the slow commits of [`install_slow_commits`] on or off.
pub async fn slow_commits(store: &PgEventStore, on: bool) {
    sqlx::query("UPDATE public.slow_commit SET slow = $1")
        .bind(on)
        .execute(store.pool())
        .await
        .expect("switch slow commits");
}

/// The pid of the one backend of this database that `condition` (SQL on
/// pg_stat_activity) picks, waiting up to 10 s for it to appear.
pub async fn backend_where(admin: &mut PgConnection, condition: &str) -> i32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let sql = format!(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND {condition}"
    );
    loop {
        let pid: Option<i32> = sqlx::query_scalar(&sql)
            .fetch_optional(&mut *admin)
            .await
            .expect("pg_stat_activity");
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no backend where {condition}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Terminates every session on `store`'s database but `admin`'s; returns how many.
pub async fn kill_sessions(admin: &mut PgConnection, store: &PgEventStore) -> i64 {
    sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(
        store
            .pool()
            .connect_options()
            .get_database()
            .expect("database name"),
    )
    .fetch_one(admin)
    .await
    .expect("terminate")
}
