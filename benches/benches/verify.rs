//! The rate of `verify` (decoding stored history with the current code through an event
//! catalog) against a raw baseline in the same run: the same pages of the log, each
//! payload parsed as untyped JSON.
//!
//! Run with: `cargo bench -p annals-benches --bench verify` (PostgreSQL at `DATABASE_URL`;
//! it drops and recreates the schema `annals_verify` of the bench database).
//! `ANNALS_BENCH_VERIFY_EVENTS` sets the log's size (default 20,000).

use annals_benches::{bench_pool, interleave, print_interleaved, runtime, store};
use annals_core::{
    catalog::{verify, Verify},
    encode_event, Encoding, EventStore, ExpectedVersion, Position, ReadAll,
};
use annals_store_postgres::PgEventStore;
use bank::AccountEvent;
use sqlx::Executor;

async fn raw(store: &PgEventStore) {
    let mut after = Position::START;
    loop {
        let page = store
            .read_all(ReadAll::after(after).limit(1_000))
            .await
            .expect("read");
        let Some(last) = page.last() else { break };
        after = last.position;
        for event in &page {
            let _: serde_json::Value = serde_json::from_slice(&event.payload).expect("json");
        }
    }
}

fn main() {
    let events: usize = std::env::var("ANNALS_BENCH_VERIFY_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let rt = runtime();
    let (pool, store) = rt.block_on(async {
        let pool = bench_pool().await;
        pool.execute("DROP SCHEMA IF EXISTS annals_verify CASCADE")
            .await
            .expect("drop schema");
        let store = store(&pool, "annals_verify").await;
        for chunk in 0..events / 100 {
            let batch = (0..100)
                .map(|n| {
                    encode_event(&AccountEvent::Deposited { amount: n + 1 }, Encoding::Json)
                        .expect("encode")
                })
                .collect();
            store
                .append_to_stream(&format!("account-{chunk}"), ExpectedVersion::Any, batch)
                .await
                .expect("append");
        }
        (pool, store)
    });
    let catalog = bank::catalog();
    let options = Verify::default();
    let results = rt.block_on(interleave(
        10,
        1,
        || async {
            let report = verify(&store, &catalog, &options, |_, _| {})
                .await
                .expect("verify");
            assert_eq!(report.failed(), 0);
        },
        || raw(&store),
    ));
    print_interleaved(
        &format!(
            "verify over {events} events vs reading and parsing them raw (ratio: median round)"
        ),
        &[("verify", results)],
    );
    rt.block_on(async {
        pool.execute("DROP SCHEMA annals_verify CASCADE")
            .await
            .expect("drop schema");
    });
}
