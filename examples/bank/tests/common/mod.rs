//! What the bank tests share.

#![allow(dead_code, unreachable_pub)]

use annals_store_postgres::testkit::TestDatabase;

/// The ids of every event the bank's relay publishes (its account and customer streams),
/// in log order.
///
/// Read from the table, not with `read_all`: a tailing read stops at the oldest
/// transaction still running anywhere on the server (another test's `DROP DATABASE`, say),
/// and the test wants every event appended, once its writers are done.
pub async fn relayed_event_ids(db: &TestDatabase) -> Vec<uuid::Uuid> {
    sqlx::query_scalar(
        "SELECT event_id FROM annals.events
         WHERE stream_id LIKE 'account-%' OR stream_id LIKE 'customer-%'
         ORDER BY transaction_id, global_position",
    )
    .fetch_all(db.store().pool())
    .await
    .expect("read the log")
}

/// A database with nothing in it (no migrations), on the server of `DATABASE_URL`.
#[derive(Debug)]
pub struct EmptyDatabase {
    url: String,
    name: String,
}

fn base_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned())
}

async fn admin() -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(&base_url())
        .await
        .unwrap_or_else(|e| panic!("these tests need PostgreSQL at DATABASE_URL: {e}"))
}

impl EmptyDatabase {
    /// Creates it.
    pub async fn new() -> Self {
        use sqlx::Executor;
        let name = format!("annals_test_{}", uuid::Uuid::now_v7().simple());
        admin()
            .await
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("CREATE DATABASE");
        let base = base_url();
        let (server, _) = base
            .rsplit_once('/')
            .expect("DATABASE_URL names a database");
        Self {
            url: format!("{server}/{name}"),
            name,
        }
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops it.
    pub async fn drop(self) {
        use sqlx::Executor;
        admin()
            .await
            .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
            .await
            .expect("DROP DATABASE");
    }
}

/// The bank binary against `url`, with warnings-only logs and the test knobs unset unless
/// given in `env`.
pub fn bank(url: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_bank"));
    command
        .arg("--database-url")
        .arg(url)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("BANK_BALANCES_BUG")
        .env_remove("BANK_BALANCES_SLOW_MS");
    for (k, v) in env {
        command.env(k, v);
    }
    command
}
