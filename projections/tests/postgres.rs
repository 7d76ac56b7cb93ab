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
    // The last append's position (the store's head may be held back by another test's
    // open transaction elsewhere on the server).
    assert_eq!(status[0].checkpoint, head, "checkpoint is not the head");
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

/// sqlx 0.8's `begin`, dropped after BEGIN is sent and before its reply arrives (a worker
/// aborted at that moment), hands the connection back to the pool inside the open
/// transaction. Whatever runs on it next runs in that transaction: an append there is
/// acknowledged, invisible to everyone else, and lost if a later stranger rolls back (seen
/// once as a projection finding a stream's version going backwards). Checkpoint
/// transactions must begin in a way a drop cannot interrupt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_transaction_dropped_while_beginning_leaves_no_transaction_open() {
    use std::{future::Future, pin::pin, str::FromStr, task::Poll};

    use annals_core::{encode_event, Encoding, ExpectedVersion, Position};
    use annals_projections::Checkpoints;
    use sqlx::{
        postgres::{PgConnectOptions, PgPoolOptions},
        Connection, PgConnection,
    };

    let (store, db) = fresh_store().await;
    // One connection, so the append below reuses the one the dropped `begin` had.
    let options = PgConnectOptions::from_str(&common::database_url())
        .expect("DATABASE_URL")
        .database(&db);
    let single = annals_store_postgres::PgEventStore::new(
        PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("connect"),
    );
    let checkpoints = PgCheckpoints::new(&single);
    let event =
        || encode_event(&common::TallyEvent::Added { n: 1 }, Encoding::Json).expect("encode");
    single
        .append_to_stream("warm", ExpectedVersion::Any, vec![event()])
        .await
        .expect("warm the pool");
    let mut admin = PgConnection::connect(&common::database_url())
        .await
        .expect("admin");
    // Poll `begin` until the server has executed BEGIN, then drop it before it sees the
    // reply.
    let mut interrupted = false;
    for _ in 0..2_000 {
        let mut begin = pin!(checkpoints.begin("p", Position::START));
        loop {
            let polled =
                std::future::poll_fn(|cx| Poll::Ready(begin.as_mut().poll(cx).map(|r| r.is_ok())))
                    .await;
            if let Poll::Ready(ok) = polled {
                assert!(ok, "begin failed");
                break; // finished before we caught it in flight: the tx drops and rolls back
            }
            if open_transactions(&mut admin, &db).await > 0 {
                interrupted = true;
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        if interrupted {
            break;
        }
        // Let the dropped transaction's rollback finish before trying again.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(interrupted, "never caught BEGIN in flight");

    single
        .append_to_stream("after", ExpectedVersion::NoStream, vec![event()])
        .await
        .expect("append after the dropped begin");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let visible: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM \"{}\".events WHERE stream_id = 'after'",
            single.schema()
        ))
        // Through the other pool: another connection to the same database.
        .fetch_one(store.pool())
        .await
        .expect("count");
        if visible == 1 && open_transactions(&mut admin, &db).await == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the acknowledged append is not committed ({visible} visible): it ran inside the \
             dropped begin's transaction"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(store);
    drop(single);
    let _ = admin.close().await;
    drop_database(&db).await;
}

/// Connections to `db` sitting in an open transaction.
async fn open_transactions(admin: &mut sqlx::PgConnection, db: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = $1 AND state LIKE 'idle in transaction%'",
    )
    .bind(db)
    .fetch_one(admin)
    .await
    .expect("pg_stat_activity")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_parks_its_stream_until_retried() {
    let (store, db) = fresh_store().await;
    let read = PgCheckpoints::new(&store);
    common::parking::a_poison_event_parks_its_stream_until_retried(store, read).await;
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discarding_the_head_releases_the_parked_events() {
    let (store, db) = fresh_store().await;
    let read = PgCheckpoints::new(&store);
    common::parking::discarding_the_head_releases_the_parked_events(store, read).await;
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_broker_restarts_the_worker_and_loses_nothing() {
    let (store, db) = fresh_store().await;
    let read = PgCheckpoints::new(&store);
    common::delivery::an_unavailable_broker_restarts_the_worker_and_loses_nothing(store, read)
        .await;
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_deliver_and_commit_delivers_again() {
    let (store, db) = fresh_store().await;
    let read = PgCheckpoints::new(&store);
    common::delivery::a_crash_between_deliver_and_commit_delivers_again(store, read).await;
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeliverable_event_is_dead_lettered_without_retries() {
    let (store, db) = fresh_store().await;
    let read = PgCheckpoints::new(&store);
    common::delivery::an_undeliverable_event_is_dead_lettered_without_retries(store, read).await;
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_event_parks_its_stream_and_the_worker_resumes() {
    let (store, db) = fresh_store().await;
    let read = PgCheckpoints::new(&store);
    common::skip::a_skipped_event_parks_its_stream_and_the_worker_resumes(store, read).await;
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_skips_skip_one_event() {
    let (store, db) = fresh_store().await;
    let read = PgCheckpoints::new(&store);
    common::skip::racing_skips_skip_one_event(store, read).await;
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_once_due_and_never_early() {
    let (store, db) = fresh_store().await;
    common::timers::timers_fire_once_due_and_never_early(PgCheckpoints::new(&store)).await;
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_started_at_a_time_sees_what_came_since() {
    let (store, db) = fresh_store().await;
    let read = PgCheckpoints::new(&store);
    common::start_from::a_subscription_started_at_a_time_sees_what_came_since(store, read).await;
    drop_database(&db).await;
}
