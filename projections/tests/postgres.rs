//! The engine on PostgreSQL, each test on a fresh database: crashes mid-batch, two
//! workers, poison events, and a 100,000-event catch-up.

mod common;

use std::time::{Duration, Instant};

use annals_core::EventStore;
use annals_projections::{EngineOptions, PgCheckpoints, ProjectionEngine};
use common::{
    append_tallies, drop_database, expected_tallies, fresh_store, pg_rows, scenarios, Tallies,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_resume_to_the_same_read_model() {
    let (store, db) = fresh_store().await;
    let read = PgCheckpoints::new(&store);
    scenarios::killed_workers_resume_to_the_same_read_model(store, read, 40).await;
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_with_a_lease_fail_over_and_never_double_apply() {
    let (store, db) = fresh_store().await;
    let read = PgCheckpoints::new(&store);
    scenarios::two_workers_never_apply_an_event_twice(store, read, true).await;
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_racing_workers_without_a_lease_are_fenced() {
    let (store, db) = fresh_store().await;
    let read = PgCheckpoints::new(&store);
    scenarios::two_workers_never_apply_an_event_twice(store, read, false).await;
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_and_later_events_apply() {
    let (store, db) = fresh_store().await;
    let read = PgCheckpoints::new(&store);
    scenarios::poison_event_is_dead_lettered(store, read).await;
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_halts_the_projection() {
    let (store, db) = fresh_store().await;
    let read = PgCheckpoints::new(&store);
    scenarios::poison_event_halts(store, read).await;
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_over_100_000_events_reaches_the_head() {
    let (store, db) = fresh_store().await;
    let read = PgCheckpoints::new(&store);
    let started = Instant::now();
    let head = append_tallies(&store, "s", 1_000, 100_000, 1_000).await;
    let appended = started.elapsed();
    let running = ProjectionEngine::new(store.clone(), read.clone())
        .with_options(EngineOptions::default().batch_size(2_000))
        .register(Tallies::default())
        .start();
    let started = Instant::now();
    running
        .wait_until_caught_up(head, Duration::from_secs(300))
        .await
        .expect("caught up");
    let caught_up = started.elapsed();
    let status = running.status().await.expect("status");
    running.shutdown().await;
    assert_eq!(
        status[0].checkpoint,
        store.head().await.expect("head"),
        "checkpoint is not the head"
    );
    assert_eq!(status[0].lag, 0);
    let rows = pg_rows(read.pool()).await;
    assert_eq!(
        rows.values().map(|t| t.applied).sum::<i64>(),
        100_000 - 100_000 / 7
    );
    assert_eq!(rows, expected_tallies(&store).await);
    println!("appended 100k in {appended:?}, caught up in {caught_up:?}");
    drop_database(&db).await;
}
