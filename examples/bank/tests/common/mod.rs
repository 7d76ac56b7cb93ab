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
