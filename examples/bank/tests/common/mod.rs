//! What the bank tests share.

#![allow(dead_code, unreachable_pub)]

use annals_core::{EventStore, Position, ReadAll};
use annals_store_postgres::testkit::TestDatabase;

/// The ids of every event the bank's relay publishes (its account and customer streams),
/// in log order.
pub async fn relayed_event_ids(db: &TestDatabase) -> Vec<uuid::Uuid> {
    db.store()
        .read_all(ReadAll::after(Position::START).limit(100_000))
        .await
        .expect("read")
        .into_iter()
        .filter(|e| e.stream_id.starts_with("account-") || e.stream_id.starts_with("customer-"))
        .map(|e| e.event_id)
        .collect()
}
