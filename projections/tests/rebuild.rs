//! Rebuilds on PostgreSQL: shadow tables built while the live table keeps serving and
//! writers keep appending, an atomic swap, resumption after an interruption, and reset.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use annals_core::Position;
use annals_projections::{EngineOptions, PgCheckpoints, ProjectionEngine, SubscriptionState};
use common::{
    add, append_tallies, drop_database, expected_tallies, fresh_store, pg_rows, scenarios::WAIT,
    Tallies,
};

fn engine(
    store: &annals_store_postgres::PgEventStore,
    projection: Tallies,
) -> ProjectionEngine<annals_store_postgres::PgEventStore, PgCheckpoints> {
    ProjectionEngine::new(store.clone(), PgCheckpoints::new(store))
        .with_options(
            EngineOptions::default()
                .batch_size(200)
                .idle_wait(Duration::from_millis(50)),
        )
        .register(projection)
}

/// Runs the buggy projection until it has built the live table up to `head`.
async fn build_with_the_bug(store: &annals_store_postgres::PgEventStore, head: Position) {
    let buggy = engine(
        store,
        Tallies {
            bug: true,
            ..Tallies::default()
        },
    )
    .start();
    buggy
        .wait_until_caught_up(head, WAIT)
        .await
        .expect("the buggy projection caught up");
    buggy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_swaps_in_a_correct_table_while_readers_and_writers_carry_on() {
    let (store, db) = fresh_store().await;
    let head = append_tallies(&store, "s", 20, 6_000, 3).await;
    // The buggy version built the live table.
    build_with_the_bug(&store, head).await;
    assert_ne!(
        pg_rows(store.pool()).await,
        expected_tallies(&store).await,
        "the bug did not show"
    );
    let streams_before = pg_rows(store.pool()).await.len();

    // The fixed version is deployed: it runs live (on the wrong table) while it rebuilds.
    let fixed = engine(&store, Tallies::default());
    let live = fixed.start();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (pool, stop) = (store.pool().clone(), stop.clone());
        tokio::spawn(async move {
            let mut reads = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let streams: i64 = sqlx::query_scalar("SELECT count(*) FROM tallies")
                    .fetch_one(&pool)
                    .await
                    .expect("read");
                assert!(
                    streams as usize >= streams_before,
                    "a reader saw a partial table: {streams} rows"
                );
                reads += 1;
            }
            reads
        })
    };
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut last = Position::START;
            while !stop.load(Ordering::SeqCst) {
                last = append_tallies(&store, "w", 5, 30, 3).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            last
        })
    };
    let mut reports = Vec::new();
    fixed
        .rebuild("tallies", |p| reports.push(p.clone()))
        .await
        .expect("rebuild");
    stop.store(true, Ordering::SeqCst);
    let reads = reader.await.expect("reader");
    let last = writer.await.expect("writer");
    live.wait_until_caught_up(last, WAIT)
        .await
        .expect("live after the swap");
    live.shutdown().await;

    assert!(reads > 10, "the reader hardly ran ({reads} reads)");
    assert!(reports.last().is_some_and(|p| p.swapped), "no final report");
    assert!(
        reports.windows(2).all(|w| w[0].done <= w[1].done),
        "progress went backwards"
    );
    assert_eq!(
        pg_rows(store.pool()).await,
        expected_tallies(&store).await,
        "the rebuilt table differs from a replay"
    );
    let status = fixed.status().await.expect("status");
    assert_ne!(status[0].state, SubscriptionState::Rebuilding);
    assert_eq!(
        fixed.rebuild_checkpoint("tallies").await.expect("shadow"),
        None,
        "the shadow was left behind"
    );
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rebuild_leaves_the_live_table_alone_and_resumes() {
    let (store, db) = fresh_store().await;
    let head = append_tallies(&store, "s", 20, 8_000, 4).await;
    build_with_the_bug(&store, head).await;
    let live_before = pg_rows(store.pool()).await;

    let fixed = engine(
        &store,
        Tallies {
            slow: Some(Duration::from_micros(100)),
            ..Tallies::default()
        },
    );
    let rebuild = {
        let fixed = fixed.clone();
        tokio::spawn(async move { fixed.rebuild("tallies", |_| {}).await })
    };
    loop {
        if fixed
            .rebuild_checkpoint("tallies")
            .await
            .expect("shadow")
            .is_some_and(|p| p > Position::START)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rebuild.abort();
    assert!(
        rebuild.await.is_err(),
        "the rebuild finished before it could be interrupted"
    );
    assert_eq!(
        pg_rows(store.pool()).await,
        live_before,
        "an interrupted rebuild changed the live table"
    );
    // Nothing claims to rebuild once the rebuild is gone (its lease connection closed);
    // status points at the unfinished one instead.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let status = loop {
        let status = fixed.status().await.expect("status").remove(0);
        if status.state != SubscriptionState::Rebuilding {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status still says rebuilding after the rebuild was killed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status
        .unfinished_rebuild
        .is_some_and(|p| p > Position::START));

    let stopped_at = fixed
        .rebuild_checkpoint("tallies")
        .await
        .expect("shadow")
        .expect("a shadow to resume");
    let mut resumed = None;
    fixed
        .rebuild("tallies", |p| resumed = p.resumed_from)
        .await
        .expect("resumed rebuild");
    assert_eq!(resumed, Some(stopped_at), "did not resume where it stopped");
    assert_eq!(pg_rows(store.pool()).await, expected_tallies(&store).await);

    // Discarding: a new rebuild interrupted again, then thrown away.
    assert!(!fixed
        .discard_rebuild("tallies")
        .await
        .expect("discard nothing"));
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_truncates_and_the_workers_replay() {
    let (store, db) = fresh_store().await;
    let head = append_tallies(&store, "s", 5, 500, 2).await;
    build_with_the_bug(&store, head).await;
    let fixed = engine(&store, Tallies::default());
    fixed.reset("tallies").await.expect("reset");
    assert!(pg_rows(store.pool()).await.is_empty());
    assert_eq!(
        fixed.status().await.expect("status")[0].checkpoint,
        Position::START
    );
    let running = fixed.start();
    running
        .wait_until_caught_up(head, WAIT)
        .await
        .expect("replayed");
    running.shutdown().await;
    assert_eq!(pg_rows(store.pool()).await, expected_tallies(&store).await);
    assert!(matches!(
        fixed.reset("nope").await,
        Err(annals_projections::Error::UnknownProjection { .. })
    ));
    drop_database(&db).await;
}

/// Declares `tallies` but leaves creating it to someone else (default `setup`).
struct NoSetup(Tallies);

impl annals_projections::Projection<PgCheckpoints> for NoSetup {
    type Event = common::TallyEvent;
    fn name(&self) -> &str {
        "tallies"
    }
    fn tables(&self) -> Vec<String> {
        vec!["tallies".into()]
    }
    async fn handle(
        &self,
        event: &annals_core::Envelope<common::TallyEvent>,
        tx: &mut annals_projections::PgTx,
    ) -> Result<(), annals_projections::HandlerError> {
        annals_projections::Projection::<PgCheckpoints>::handle(&self.0, event, tx).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_never_writes_through_to_live_tables_its_setup_did_not_shadow() {
    let (store, db) = fresh_store().await;
    let head = append_tallies(&store, "s", 5, 300, 3).await;
    let live = engine(&store, Tallies::default()).start();
    live.wait_until_caught_up(head, WAIT)
        .await
        .expect("caught up");
    live.shutdown().await;
    let before = pg_rows(store.pool()).await;
    let engine = ProjectionEngine::new(store.clone(), PgCheckpoints::new(&store))
        .register(NoSetup(Tallies::default()));
    let err = engine
        .rebuild("tallies", |_| {})
        .await
        .expect_err("must refuse");
    assert!(
        matches!(err, annals_projections::Error::Unsupported(_)),
        "{err}"
    );
    assert_eq!(
        pg_rows(store.pool()).await,
        before,
        "the rebuild wrote to the live table"
    );
    assert!(engine.discard_rebuild("tallies").await.expect("discard"));
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_clears_dead_letters_it_replayed() {
    let (store, db) = fresh_store().await;
    let poisoned = Tallies {
        policy: annals_projections::FailurePolicy::DeadLetter,
        ..Tallies::default()
    };
    poisoned.poison.store(true, Ordering::SeqCst);
    let live = engine(&store, poisoned).start();
    let mut head = Position::START;
    for n in [1, 13, 2] {
        let event = annals_core::encode_event(
            &common::TallyEvent::Added { n },
            annals_core::Encoding::Json,
        )
        .expect("encode");
        head = annals_core::EventStore::append_to_stream(
            &store,
            &format!("p{n}"),
            annals_core::ExpectedVersion::Any,
            vec![event],
        )
        .await
        .expect("append")
        .position;
    }
    live.wait_until_caught_up(head, WAIT)
        .await
        .expect("caught up");
    live.shutdown().await;
    let fixed = engine(&store, Tallies::default());
    assert_eq!(fixed.dead_letters(None).await.expect("letters").len(), 1);
    fixed
        .rebuild("tallies", |_| {})
        .await
        .expect("rebuild with the fix");
    assert!(
        fixed.dead_letters(None).await.expect("letters").is_empty(),
        "a replayed event is still dead-lettered"
    );
    assert_eq!(pg_rows(store.pool()).await, expected_tallies(&store).await);
    drop_database(&db).await;
}

/// A rebuild follows the projection's failure policy: with `Park`, the refused event and
/// the rest of its stream become the rebuild's letters (other streams go on), and they
/// replace the projection's old letters at the swap; after the fix, a retry applies them
/// in stream order. With `Halt` it stops on the event (resumably), unless told to skip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_dead_letters_per_the_policy_and_its_letters_replace_the_old_ones() {
    use annals_projections::{Error, FailurePolicy};
    let (store, db) = fresh_store().await;
    let parking = Tallies {
        policy: FailurePolicy::Park,
        ..Tallies::default()
    };
    parking.poison.store(true, Ordering::SeqCst);
    // The live model parked q behind its own 13 (an old letter the rebuild will replace).
    add(&store, "q", 13).await;
    let live = engine(&store, parking.clone()).start();
    let head = add(&store, "q", 2).await;
    live.wait_until_caught_up(head, WAIT).await.expect("live");
    live.shutdown().await;

    for (stream, n) in [("p", 1), ("p", 13), ("r", 1), ("p", 3), ("r", 2)] {
        add(&store, stream, n).await;
    }
    // Under Halt the rebuild stops on the first 13 and keeps its shadow...
    let halting = engine(
        &store,
        Tallies {
            policy: FailurePolicy::Halt,
            poison: Arc::clone(&parking.poison),
            ..Tallies::default()
        },
    );
    let refused = halting.rebuild("tallies", |_| {}).await;
    assert!(
        matches!(refused, Err(Error::RebuildFailed { .. })),
        "{refused:?}"
    );
    assert!(halting
        .rebuild_checkpoint("tallies")
        .await
        .expect("shadow")
        .is_some());
    assert!(halting.discard_rebuild("tallies").await.expect("discard"));

    // ... under Park it parks, and its letters replace the live ones at the swap.
    let engine = engine(&store, parking.clone());
    engine.rebuild("tallies", |_| {}).await.expect("rebuild");
    let letters = engine.dead_letters(None).await.expect("letters");
    let mut seen: Vec<(String, String, u64, bool)> = letters
        .iter()
        .map(|d| {
            (
                d.projection.clone(),
                d.stream_id.clone(),
                d.stream_version,
                d.parks_stream,
            )
        })
        .collect();
    seen.sort();
    let expected: Vec<(String, String, u64, bool)> = [("p", 2), ("p", 3), ("q", 1), ("q", 2)]
        .into_iter()
        .map(|(s, v)| ("tallies".to_owned(), s.to_owned(), v, true))
        .collect();
    assert_eq!(
        seen, expected,
        "the rebuild's letters are not the projection's now"
    );
    let rows = pg_rows(store.pool()).await;
    assert_eq!(rows.get("r").map(|t| t.total), Some(3));
    assert_eq!(rows.get("p").map(|t| t.total), Some(1));
    assert!(!rows.contains_key("q"));

    parking.poison.store(false, Ordering::SeqCst);
    for stream in ["p", "q"] {
        let head = letters
            .iter()
            .filter(|d| d.stream_id == stream)
            .min_by_key(|d| d.stream_version)
            .expect("head");
        engine.retry_dead_letter(head.id).await.expect("retry");
    }
    assert!(engine.dead_letters(None).await.expect("letters").is_empty());
    assert_eq!(pg_rows(store.pool()).await, expected_tallies(&store).await);
    drop_database(&db).await;
}
