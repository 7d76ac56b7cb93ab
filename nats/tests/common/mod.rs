//! A private `nats-server -js` per test (on a port of its own, with a store directory of its
//! own, killed and restarted at will), and readers of what a relay put on the bus.

#![allow(dead_code, unreachable_pub)]

pub mod secure;

use std::time::Duration;

use annals_core::{encode_event, Encoding, EventStore, ExpectedVersion, NewEvent, Position};
pub use annals_nats::testkit::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Ev {
    #[serde(rename = "noted")]
    Noted { n: u64 },
    #[serde(rename = "skipped")]
    Skipped,
}
impl annals_core::DomainEvent for Ev {}

pub fn noted(n: u64) -> NewEvent {
    encode_event(&Ev::Noted { n }, Encoding::Json).expect("encode")
}

/// Appends `count` events over `streams` streams of `category`; returns their ids and the
/// last position.
pub async fn append<S: EventStore>(
    store: &S,
    category: &str,
    streams: usize,
    count: usize,
) -> (Vec<uuid::Uuid>, Position) {
    let mut ids = Vec::new();
    let mut last = Position::START;
    for i in 0..count {
        let event = noted(i as u64);
        ids.push(event.event_id);
        last = store
            .append_to_stream(
                &format!("{category}-{}", i % streams),
                ExpectedVersion::Any,
                vec![event],
            )
            .await
            .expect("append")
            .position;
    }
    (ids, last)
}

/// Engine options for tests: small batches, quick restarts.
pub fn fast() -> annals_projections::EngineOptions {
    annals_projections::EngineOptions::default()
        .batch_size(50)
        .idle_wait(Duration::from_millis(50))
        .lease_retry(Duration::from_millis(20))
        .restart_backoff(Duration::from_millis(100))
}

/// Runs `relay` on `store` until it has handled everything up to `head`, then stops it.
pub async fn relay_until(
    store: &annals_store_postgres::PgEventStore,
    relay: annals_nats::Relay,
    head: Position,
) {
    let running = annals_projections::ProjectionEngine::new(
        store.clone(),
        annals_projections::PgCheckpoints::new(store),
    )
    .with_options(fast())
    .subscribe(relay)
    .start();
    running
        .wait_until_caught_up(head, Duration::from_secs(90))
        .await
        .expect("the relay caught up");
    running.shutdown().await;
}
