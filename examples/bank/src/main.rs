//! Run with: `cargo run -p bank` (in-memory store), or
//! `cargo run -p bank -- --database-url postgres://root@127.0.0.1:5432/test` (PostgreSQL).
//!
//! The annals bank example: opens accounts, moves money, shows a rejected withdrawal,
//! reloads an account from its events and prints its stream.

use std::time::Duration;

use annals_projections::{MemoryCheckpoints, PgCheckpoints, ProjectionEngine};
use annals_store_memory::MemoryEventStore;
use annals_store_postgres::PgEventStore;
use anyhow::{bail, Context};
use bank::balances::{self, AccountBalances, BalanceRow};

/// How long the example waits for its read model.
const CATCH_UP: Duration = Duration::from_secs(30);

const USAGE: &str = "usage: bank [--database-url postgres://user@host:port/database]";

fn database_url() -> anyhow::Result<Option<String>> {
    let mut args = std::env::args().skip(1);
    let mut url = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--database-url" => url = Some(args.next().context(USAGE)?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => match other.strip_prefix("--database-url=") {
                Some(value) => url = Some(value.to_owned()),
                None => bail!("unexpected argument {other:?}\n{USAGE}"),
            },
        }
    }
    Ok(url)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    // Account ids carry a per-run suffix, so the scenario can run again on a database that
    // still holds the previous run's accounts.
    let run_id = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
    match database_url()? {
        None => {
            println!("annals bank example on the in-memory store");
            let store = MemoryEventStore::new();
            let read = MemoryCheckpoints::new();
            let projections = ProjectionEngine::new(store.clone(), read.clone())
                .register(AccountBalances)
                .start();
            let last = bank::run_scenario(store, &run_id).await?;
            projections.wait_until_caught_up(last, CATCH_UP).await?;
            projections.shutdown().await;
            let mine = |id: &String| id.ends_with(&run_id);
            bank::print_balances(
                read.rows::<BalanceRow>(balances::TABLE)
                    .into_iter()
                    .filter(|(id, _)| mine(id)),
            );
            Ok(())
        }
        Some(url) => {
            let store = PgEventStore::connect(&url).await?;
            store
                .migrate()
                .await
                .context("migrating the annals schema")?;
            println!(
                "annals bank example on PostgreSQL (schema {})",
                store.schema()
            );
            let read = PgCheckpoints::new(&store);
            let projections = ProjectionEngine::new(store.clone(), read.clone())
                .register(AccountBalances)
                .start();
            let last = bank::run_scenario(store, &run_id).await?;
            projections.wait_until_caught_up(last, CATCH_UP).await?;
            projections.shutdown().await;
            let accounts = [format!("ada-{run_id}"), format!("bob-{run_id}")];
            let accounts: Vec<&str> = accounts.iter().map(String::as_str).collect();
            let rows = balances::pg_rows(read.pool(), &accounts)
                .await
                .context("reading account_balances")?;
            bank::print_balances(rows);
            Ok(())
        }
    }
}
