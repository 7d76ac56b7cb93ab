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
