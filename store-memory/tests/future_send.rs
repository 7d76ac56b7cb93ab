//! The public futures are `Send`: they can be spawned on a multi-threaded runtime. A
//! regression here fails to compile.

use std::time::Duration;

use annals_core::{
    Aggregate, DomainEvent, EventStore, Position, ReadAll, Repository, SnapshotStore,
};
use annals_store_memory::MemoryEventStore;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Tally(u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum TallyEvent {
    #[serde(rename = "added")]
    Added(u64),
}
impl DomainEvent for TallyEvent {}

impl Aggregate for Tally {
    const TYPE: &'static str = "tally";
    type Command = u64;
    type Event = TallyEvent;
    type Error = std::convert::Infallible;
    fn handle(&self, n: u64) -> Result<Vec<TallyEvent>, Self::Error> {
        Ok(vec![TallyEvent::Added(n)])
    }
    fn apply(&mut self, TallyEvent::Added(n): &TallyEvent) {
        self.0 += n;
    }
}

/// Spawns the repository and store futures of any store, which requires them to be `Send`.
async fn spawn_all<S: EventStore + SnapshotStore + Clone + 'static>(
    store: S,
) -> (u64, Position, bool) {
    let repo = Repository::<Tally, S>::new(store.clone());
    let executed = tokio::spawn(async move { repo.execute("t", 4).await }).await;
    let version = executed.expect("join").expect("execute").version;
    let s = store.clone();
    let head = tokio::spawn(async move { s.head().await })
        .await
        .expect("join")
        .expect("head");
    let s = store.clone();
    let read = tokio::spawn(async move { s.read_all(ReadAll::after(Position::START)).await });
    assert_eq!(read.await.expect("join").expect("read").len(), 1);
    let s = store.clone();
    let loaded = tokio::spawn(async move { s.load_stream("tally-t", "tally", 1).await });
    assert_eq!(loaded.await.expect("join").expect("load").1.len(), 1);
    let cached = Repository::<Tally, S>::new(store.clone()).with_cache(8);
    let cached = tokio::spawn(async move { cached.load_cached("t").await });
    assert_eq!(cached.await.expect("join").expect("load cached").version, 1);
    let s = store;
    let woke =
        tokio::spawn(async move { s.wait_for_events(Position::START, Duration::ZERO).await });
    (version, head, woke.await.expect("join").expect("wait"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_repository_futures_are_spawnable() {
    let (version, head, woke) = spawn_all(MemoryEventStore::new()).await;
    assert_eq!(version, 1);
    assert!(head > Position::START);
    assert!(woke);
}
