//! Commands through the repository on Postgres: snapshots loaded with their tail in one
//! query, and concurrent commands on one aggregate that all land through conflict retries.

mod common;

use annals_core::{Aggregate, DomainEvent, Repository, RepositoryOptions, SnapshotStore};
use common::TestDatabases;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Counter {
    total: u64,
    bumps: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CounterEvent {
    #[serde(rename = "bumped")]
    Bumped { by: u64 },
}
impl DomainEvent for CounterEvent {}

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Command = u64;
    type Event = CounterEvent;
    type Error = std::convert::Infallible;
    fn handle(&self, by: u64) -> Result<Vec<CounterEvent>, Self::Error> {
        Ok(vec![CounterEvent::Bumped { by }])
    }
    fn apply(&mut self, CounterEvent::Bumped { by }: &CounterEvent) {
        self.total += by;
        self.bumps += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_written_and_loaded_with_their_tail() {
    let dbs = TestDatabases::default();
    let store = dbs.store().await;
    let counters = Repository::<Counter, _>::new(store.clone())
        .with_options(RepositoryOptions::default().snapshot_every(Some(50)));
    for _ in 0..120 {
        counters.execute("a", 1).await.expect("bump");
    }
    let snapshot = store
        .load_snapshot("counter-a", "counter", 1)
        .await
        .expect("load");
    assert_eq!(snapshot.map(|s| s.stream_version), Some(100));
    let loaded = counters.load("a").await.expect("load");
    assert_eq!(loaded.from_snapshot, Some(100));
    assert_eq!((loaded.version, loaded.state.total), (120, 120));
    dbs.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_on_one_aggregate_all_land() {
    let dbs = TestDatabases::default();
    let counters = Repository::<Counter, _>::new(dbs.store().await)
        .with_options(RepositoryOptions::default().max_conflict_retries(1_000));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let counters = counters.clone();
            tokio::spawn(async move {
                let mut retries = 0;
                for _ in 0..20 {
                    retries += counters.execute("hot", 1).await.expect("bump").retries;
                }
                retries
            })
        })
        .collect();
    let mut retries = 0;
    for task in tasks {
        retries += task.await.expect("join");
    }
    let loaded = counters.load("hot").await.expect("load");
    assert_eq!(
        (loaded.state.total, loaded.version),
        (160, 160),
        "a command was lost or doubled"
    );
    assert!(
        retries > 0,
        "no conflicts: the test did not exercise retries"
    );
    dbs.drop_all().await;
}
