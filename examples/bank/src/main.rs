//! Run with: `cargo run -p bank` (in-memory store).
//!
//! The annals bank example: opens accounts, moves money, shows a rejected withdrawal,
//! reloads an account from its events and prints its stream.

use annals_store_memory::MemoryEventStore;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let run_id = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
    println!("annals bank example on the in-memory store");
    bank::run_scenario(MemoryEventStore::new(), &run_id).await
}
