//! Live following: NOTIFY wakes waiters at once; without it (or with the LISTEN connection
//! killed) polling still finds every event.

mod common;

use std::time::{Duration, Instant};

use annals_core::{EventStore, ExpectedVersion, Position};
use annals_store_postgres::{PgEventStore, PgStoreOptions};
use common::{event, TestDatabases};
use sqlx::Executor;

/// Spawns a waiter, appends after a pause, returns how long the waiter took to wake.
async fn wake_latency(waiter: PgEventStore, writer: PgEventStore) -> Duration {
    let head = waiter.head().await.expect("head");
    let waiting = tokio::spawn(async move {
        let woke = waiter.wait_for_events(head, Duration::from_secs(20)).await;
        (woke, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let appended_at = Instant::now();
    writer
        .append_to_stream("s", ExpectedVersion::Any, vec![event(0)])
        .await
        .expect("append");
    let (woke, at) = waiting.await.expect("join");
    assert!(woke.expect("wait"), "the waiter timed out");
    at.saturating_duration_since(appended_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_a_waiter_long_before_the_poll_interval() {
    let dbs = TestDatabases::default();
    let store = dbs
        .store_with(PgStoreOptions::new().poll_interval(Duration::from_secs(60)))
        .await;
    // Another handle on the store, as another process would be: it cannot wake the
    // waiter directly.
    let writer =
        PgEventStore::with_options(store.pool().clone(), PgStoreOptions::new()).expect("writer");
    let latency = wake_latency(store, writer).await;
    assert!(
        latency < Duration::from_secs(3),
        "woke after {latency:?}: NOTIFY did not arrive"
    );
    dbs.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_waiters_wake_at_once_without_notify() {
    let dbs = TestDatabases::default();
    let store = dbs
        .store_with(
            PgStoreOptions::new()
                .notify(false)
                .poll_interval(Duration::from_secs(60)),
        )
        .await;
    let latency = wake_latency(store.clone(), store).await;
    assert!(
        latency < Duration::from_secs(1),
        "a waiter on the same store took {latency:?}"
    );
    dbs.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notify_polling_still_finds_the_event() {
    let dbs = TestDatabases::default();
    let store = dbs
        .store_with(
            PgStoreOptions::new()
                .notify(false)
                .poll_interval(Duration::from_millis(100)),
        )
        .await;
    // Another handle on the store, as another process would be: it cannot wake the
    // waiter directly.
    let writer =
        PgEventStore::with_options(store.pool().clone(), PgStoreOptions::new().notify(false))
            .expect("writer");
    let latency = wake_latency(store, writer).await;
    assert!(latency < Duration::from_secs(3), "polling took {latency:?}");
    dbs.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listen_connection_costs_latency_not_events() {
    let dbs = TestDatabases::default();
    let store = dbs
        .store_with(PgStoreOptions::new().poll_interval(Duration::from_secs(2)))
        .await;
    // Start the listener, then kill its connection.
    assert!(!store
        .wait_for_events(Position::START, Duration::from_millis(200))
        .await
        .expect("wait"));
    let killed: i64 = store
        .pool()
        .fetch_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .await
        .map(|row| sqlx::Row::get(&row, 0))
        .expect("terminate the listener");
    assert_eq!(killed, 1, "expected exactly one LISTEN connection");
    // Another handle on the store, as another process would be: it cannot wake the
    // waiter directly.
    let writer =
        PgEventStore::with_options(store.pool().clone(), PgStoreOptions::new()).expect("writer");
    let latency = wake_latency(store, writer).await;
    assert!(
        latency < Duration::from_secs(5),
        "the waiter took {latency:?}"
    );
    dbs.drop_all().await;
}
