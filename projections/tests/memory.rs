//! The engine on the in-memory store: the given/when/then kit, and the shared scenarios
//! (crashes mid-batch, two workers, poison events).

mod common;

use annals_projections::{testkit, MemoryCheckpoints};
use annals_store_memory::MemoryEventStore;
use common::{scenarios, Tallies, Tally, TallyEvent};

#[tokio::test]
async fn given_events_the_read_model_holds_these_rows() {
    let read = testkit::given(
        Tallies::default(),
        [
            ("a", TallyEvent::Added { n: 2 }),
            ("b", TallyEvent::Added { n: 5 }),
            ("a", TallyEvent::Ignored),
            ("a", TallyEvent::Added { n: 3 }),
        ],
    )
    .await
    .expect("projection ran");
    let a: Tally = read.row("tallies", "a").expect("row").expect("a");
    assert_eq!(
        a,
        Tally {
            total: 5,
            applied: 2,
            last_version: 3
        }
    );
    assert_eq!(read.rows::<Tally>("tallies").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_resume_to_the_same_read_model() {
    scenarios::killed_workers_resume_to_the_same_read_model(
        MemoryEventStore::new(),
        MemoryCheckpoints::new(),
        30,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_never_apply_an_event_twice() {
    for lease in [true, false] {
        scenarios::two_workers_never_apply_an_event_twice(
            MemoryEventStore::new(),
            MemoryCheckpoints::new(),
            lease,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_and_later_events_apply() {
    scenarios::poison_event_is_dead_lettered(MemoryEventStore::new(), MemoryCheckpoints::new())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_halts_the_projection() {
    scenarios::poison_event_halts(MemoryEventStore::new(), MemoryCheckpoints::new()).await;
}

/// Counts every event of the log, whatever its type.
struct Everything;

impl annals_projections::Projection<MemoryCheckpoints> for Everything {
    type Event = TallyEvent;
    fn name(&self) -> &str {
        "everything"
    }
    async fn handle(
        &self,
        _event: &annals_core::Envelope<TallyEvent>,
        tx: &mut annals_projections::MemoryTx,
    ) -> Result<(), annals_projections::HandlerError> {
        let n: u64 = tx.get("everything", "count")?.unwrap_or(0);
        tx.put("everything", "count", &(n + 1))?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_projections_run_in_one_engine_each_with_its_own_checkpoint() {
    use annals_projections::{Checkpoints, ProjectionEngine};
    let store = MemoryEventStore::new();
    let read = MemoryCheckpoints::new();
    let running = ProjectionEngine::new(store.clone(), read.clone())
        .with_options(scenarios::fast())
        .register(Tallies::default())
        .register(Everything)
        .start();
    let head = common::append_tallies(&store, "s", 4, 70, 5).await;
    running
        .wait_until_caught_up(head, scenarios::WAIT)
        .await
        .expect("both caught up");
    let status = running.status().await.expect("status");
    running.shutdown().await;
    assert_eq!(
        status.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["tallies", "everything"]
    );
    assert!(status.iter().all(|s| s.lag == 0 && s.checkpoint == head));
    assert_eq!(
        read.row::<u64>("everything", "count").expect("row"),
        Some(70)
    );
    assert_eq!(
        read.rows::<Tally>("tallies")
            .values()
            .map(|t| t.applied)
            .sum::<i64>(),
        60
    );
    let checkpoints = read.checkpoints().await.expect("checkpoints");
    assert_eq!(
        checkpoints.len(),
        2,
        "each projection keeps its own checkpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_parks_its_stream_until_retried() {
    common::parking::a_poison_event_parks_its_stream_until_retried(
        MemoryEventStore::new(),
        MemoryCheckpoints::new(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discarding_the_head_releases_the_parked_events() {
    common::parking::discarding_the_head_releases_the_parked_events(
        MemoryEventStore::new(),
        MemoryCheckpoints::new(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_broker_restarts_the_worker_and_loses_nothing() {
    common::delivery::an_unavailable_broker_restarts_the_worker_and_loses_nothing(
        MemoryEventStore::new(),
        MemoryCheckpoints::new(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_deliver_and_commit_delivers_again() {
    common::delivery::a_crash_between_deliver_and_commit_delivers_again(
        MemoryEventStore::new(),
        MemoryCheckpoints::new(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeliverable_event_is_dead_lettered_without_retries() {
    common::delivery::an_undeliverable_event_is_dead_lettered_without_retries(
        MemoryEventStore::new(),
        MemoryCheckpoints::new(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_event_parks_its_stream_and_the_worker_resumes() {
    common::skip::a_skipped_event_parks_its_stream_and_the_worker_resumes(
        MemoryEventStore::new(),
        MemoryCheckpoints::new(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_skips_skip_one_event() {
    common::skip::racing_skips_skip_one_event(MemoryEventStore::new(), MemoryCheckpoints::new())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_once_due_and_never_early() {
    common::timers::timers_fire_once_due_and_never_early(MemoryCheckpoints::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_started_at_a_time_sees_what_came_since() {
    common::start_from::a_subscription_started_at_a_time_sees_what_came_since(
        MemoryEventStore::new(),
        MemoryCheckpoints::new(),
    )
    .await;
}
