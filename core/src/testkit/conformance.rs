//! The store conformance suite: the [`EventStore`] and [`SnapshotStore`] contract as
//! executable checks. A store that passes [`run`] keeps every promise annals makes.
//!
//! ```no_run
//! # async fn demo<S: annals_core::EventStore + annals_core::SnapshotStore + Clone + 'static>(make: fn() -> S) {
//! // in a store crate's tests/conformance.rs, on a multi-threaded tokio runtime:
//! annals_core::testkit::conformance::run(|| async move { make() }).await;
//! # }
//! ```
//!
//! The checks are grouped by concept: expected versions and atomicity (`versions`),
//! reads of streams and of the global log (`reads`), what storage keeps and refuses
//! (`envelope`), idempotent appends (`idempotency`), snapshots (`snapshots`), commands
//! with ids through a repository (`commands`), cached repositories (`cache`), time travel
//! (`time_travel`), and concurrent writers of every kind against a tailing reader
//! (`torture`).

use std::{
    future::Future,
    time::{Duration, Instant},
};

use uuid::Uuid;

use crate::{AppendResult, Encoding, Error, EventStore, NewEvent, Position, SnapshotStore};

mod cache;
mod commands;
mod envelope;
mod idempotency;
mod reads;
mod snapshots;
mod time_travel;
mod torture;
mod versions;

pub use cache::cached_repositories_lose_no_update;
pub use commands::commands_with_ids_apply_once;
pub use envelope::{envelope_round_trip, invalid_input_writes_nothing, stream_id_limits};
pub use idempotency::{idempotent_appends, repeats_that_are_not_the_same_append};
pub use reads::{global_order_and_filters, head_position, live_waiting, stream_reads};
pub use snapshots::{loads_to_fold_agree, snapshot_past_the_end_is_ignored, snapshots};
pub use time_travel::time_travel;
pub use torture::{concurrent_appends_with_tailing_reader, TortureReport};
pub use versions::{
    concurrent_writers_one_wins, expected_version_any, expected_version_exact,
    expected_version_no_stream, expected_version_stream_exists, multi_stream_all_or_nothing,
};

/// Runs every check, each against a fresh store from `fresh_store`.
///
/// # Panics
///
/// On the first broken promise, naming the check.
pub async fn run<S, F, Fut>(fresh_store: F)
where
    S: EventStore + SnapshotStore + Clone + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    expected_version_any(fresh_store().await).await;
    expected_version_no_stream(fresh_store().await).await;
    expected_version_stream_exists(fresh_store().await).await;
    expected_version_exact(fresh_store().await).await;
    concurrent_writers_one_wins(fresh_store().await).await;
    multi_stream_all_or_nothing(fresh_store().await).await;
    stream_reads(fresh_store().await).await;
    global_order_and_filters(fresh_store().await).await;
    head_position(fresh_store().await).await;
    live_waiting(fresh_store().await).await;
    envelope_round_trip(fresh_store().await).await;
    invalid_input_writes_nothing(fresh_store().await).await;
    stream_id_limits(fresh_store().await).await;
    idempotent_appends(fresh_store().await).await;
    repeats_that_are_not_the_same_append(fresh_store().await).await;
    snapshots(fresh_store().await).await;
    snapshot_past_the_end_is_ignored(fresh_store().await).await;
    loads_to_fold_agree(fresh_store().await).await;
    commands_with_ids_apply_once(fresh_store().await).await;
    cached_repositories_lose_no_update(fresh_store().await).await;
    time_travel(fresh_store().await).await;
    concurrent_appends_with_tailing_reader(fresh_store().await, 8, 40).await;
}

fn event(event_type: &str, n: u64) -> NewEvent {
    NewEvent::new(
        event_type,
        1,
        Encoding::Json,
        format!(r#"{{"n":{n}}}"#).into_bytes(),
    )
}

fn events(event_type: &str, count: u64) -> Vec<NewEvent> {
    (1..=count).map(|n| event(event_type, n)).collect()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::now_v7().simple())
}

#[track_caller]
fn expect_conflict(result: crate::Result<AppendResult>, stream: &str, actual: u64) {
    match result {
        Err(Error::Conflict {
            stream_id,
            actual: got,
            ..
        }) => {
            assert_eq!(stream_id, stream, "conflict names the wrong stream");
            assert_eq!(got, actual, "conflict reports the wrong actual version");
        }
        other => panic!("expected a conflict on `{stream}` at version {actual}, got {other:?}"),
    }
}

/// Waits until the head reaches `position`. A store may show an event to tailing readers a
/// moment after its append returned (Postgres waits for older transactions to finish), so
/// checks of the global log first let the log settle.
async fn settled<S: EventStore>(store: &S, position: Position) -> Position {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let head = store.head().await.expect("head");
        if head >= position {
            return head;
        }
        assert!(
            Instant::now() < deadline,
            "head stuck at {head}: the append at {position} never became visible"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn version_of<S: EventStore>(store: &S, stream: &str) -> u64 {
    store.stream_version(stream).await.expect("stream_version")
}
