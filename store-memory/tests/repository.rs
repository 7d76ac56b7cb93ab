//! The repository's command loop on the in-memory store: snapshots, conflict retries,
//! upcasting and typed errors for unreadable streams.

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use annals_core::{
    Aggregate, AppendResult, DomainEvent, Encoding, Error, EventStore, ExecuteError,
    ExpectedVersion, Metadata, NewEvent, Position, ReadAll, ReadStream, RecordedEvent, Repository,
    RepositoryOptions, Result, Snapshot, SnapshotStore, StreamAppend, Upcasters,
};
use annals_store_memory::MemoryEventStore;
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

impl DomainEvent for CounterEvent {
    fn schema_version(&self) -> u32 {
        2
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("cannot bump by zero")]
struct Zero;

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Command = u64;
    type Event = CounterEvent;
    type Error = Zero;

    fn handle(&self, by: u64) -> Result<Vec<CounterEvent>, Zero> {
        if by == 0 {
            return Err(Zero);
        }
        Ok(vec![CounterEvent::Bumped { by }])
    }

    fn apply(&mut self, CounterEvent::Bumped { by }: &CounterEvent) {
        self.total += by;
        self.bumps += 1;
    }
}

fn repo(store: MemoryEventStore) -> Repository<Counter, MemoryEventStore> {
    Repository::new(store)
}

#[tokio::test]
async fn execute_appends_and_load_folds() {
    let counters = repo(MemoryEventStore::new());
    let first = counters.execute("a", 2).await.expect("first");
    assert_eq!(
        (first.version, first.events.len(), first.state.total),
        (1, 1, 2)
    );
    let second = counters.execute("a", 3).await.expect("second");
    assert_eq!((second.version, second.state.total), (2, 5));
    let loaded = counters.load("a").await.expect("load");
    assert_eq!(
        (loaded.version, loaded.state.total, loaded.from_snapshot),
        (2, 5, None)
    );
    let fresh = counters.load("never").await.expect("load missing");
    assert_eq!((fresh.version, fresh.state), (0, Counter::default()));
    let stored = counters
        .store()
        .read_stream("counter-a", ReadStream::all())
        .await
        .expect("read");
    assert_eq!(stored[0].payload, br#"{"by":2}"#);
    assert_eq!(
        (stored[0].event_type.as_str(), stored[0].schema_version),
        ("bumped", 2)
    );
}

#[tokio::test]
async fn a_rejected_command_appends_nothing() {
    let counters = repo(MemoryEventStore::new());
    counters.execute("a", 1).await.expect("bump");
    let err = counters.execute("a", 0).await.unwrap_err();
    assert_eq!(err.rejection(), Some(&Zero));
    assert_eq!(counters.load("a").await.expect("load").version, 1);
}

#[tokio::test]
async fn metadata_is_stamped_on_new_events() {
    let counters = repo(MemoryEventStore::new());
    let metadata = Metadata {
        actor: Some("ops".into()),
        correlation_id: Some(uuid::Uuid::now_v7()),
        ..Metadata::default()
    };
    counters
        .execute_with_metadata("a", 1, metadata.clone())
        .await
        .expect("bump");
    let events = counters.events("a").await.expect("events");
    let stamped = &events[0].metadata;
    assert_eq!(
        (&stamped.actor, stamped.correlation_id),
        (&metadata.actor, metadata.correlation_id),
        "the caller's metadata was not kept"
    );
    // The command's own id fills the causation.
    assert!(stamped
        .causation_id
        .is_some_and(|c| Some(c) != metadata.correlation_id));

    // Without any, the command's id is both correlation and causation.
    counters.execute("b", 1).await.expect("bump");
    let plain = counters
        .events("b")
        .await
        .expect("events")
        .remove(0)
        .metadata;
    assert!(plain.correlation_id.is_some() && plain.correlation_id == plain.causation_id);
}

#[tokio::test]
async fn snapshots_are_taken_every_n_events_and_used_on_load() {
    let store = MemoryEventStore::new();
    let counters =
        repo(store.clone()).with_options(RepositoryOptions::default().snapshot_every(Some(3)));
    for by in 1..=7 {
        counters.execute("a", by).await.expect("bump");
    }
    let snapshot = store
        .load_snapshot("counter-a", "counter", 1)
        .await
        .expect("load");
    assert_eq!(snapshot.map(|s| s.stream_version), Some(6));
    let loaded = counters.load("a").await.expect("load");
    assert_eq!(loaded.from_snapshot, Some(6));
    assert_eq!(
        (loaded.version, loaded.state.total, loaded.state.bumps),
        (7, 28, 7)
    );
}

#[tokio::test]
async fn stale_or_undecodable_snapshots_fall_back_to_replay() {
    let store = MemoryEventStore::new();
    let counters =
        repo(store.clone()).with_options(RepositoryOptions::default().snapshot_every(None));
    for by in 1..=4 {
        counters.execute("a", by).await.expect("bump");
    }
    let snapshot = |schema_version, payload: Vec<u8>| Snapshot {
        stream_id: "counter-a".into(),
        aggregate_type: "counter".into(),
        schema_version,
        stream_version: 3,
        encoding: Encoding::Postcard,
        payload,
        taken_at: chrono::Utc::now(),
    };
    // A snapshot written by another schema version is never read.
    let lying = Encoding::Postcard
        .encode(&Counter {
            total: 999,
            bumps: 3,
        })
        .expect("encode");
    store.save_snapshot(snapshot(7, lying)).await.expect("save");
    let loaded = counters.load("a").await.expect("load");
    assert_eq!((loaded.state.total, loaded.from_snapshot), (10, None));
    // An undecodable snapshot under the current version means a full replay.
    store
        .save_snapshot(snapshot(1, vec![0xff; 3]))
        .await
        .expect("save");
    let loaded = counters.load("a").await.expect("load");
    assert_eq!(
        (loaded.state.total, loaded.version, loaded.from_snapshot),
        (10, 4, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_on_one_aggregate_all_land_through_retries() {
    let counters = repo(MemoryEventStore::new())
        .with_options(RepositoryOptions::default().max_conflict_retries(1_000));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let counters = counters.clone();
            tokio::spawn(async move {
                let mut retries = 0;
                for _ in 0..25 {
                    retries += counters.execute("hot", 1).await.expect("bump").retries;
                    tokio::task::yield_now().await;
                }
                retries
            })
        })
        .collect();
    let mut retries = 0;
    for task in tasks {
        retries += task.await.expect("task");
    }
    let loaded = counters.load("hot").await.expect("load");
    assert_eq!(
        (loaded.state.total, loaded.version),
        (200, 200),
        "a command was lost or doubled"
    );
    println!("{retries} conflict retries");
}

/// A store that lets another writer sneak an event in before every append.
#[derive(Clone, Debug)]
struct Contended {
    inner: MemoryEventStore,
    appends: Arc<AtomicU32>,
}

impl EventStore for Contended {
    async fn append(&self, appends: Vec<StreamAppend>) -> Result<AppendResult> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        for a in &appends {
            let sneak =
                annals_core::encode_event(&CounterEvent::Bumped { by: 100 }, Encoding::Json)?;
            self.inner
                .append_to_stream(&a.stream_id, ExpectedVersion::Any, vec![sneak])
                .await?;
        }
        self.inner.append(appends).await
    }
    async fn read_stream(&self, stream_id: &str, read: ReadStream) -> Result<Vec<RecordedEvent>> {
        self.inner.read_stream(stream_id, read).await
    }
    async fn read_all(&self, read: ReadAll) -> Result<Vec<RecordedEvent>> {
        self.inner.read_all(read).await
    }
    async fn head(&self) -> Result<Position> {
        self.inner.head().await
    }
    async fn stream_version(&self, stream_id: &str) -> Result<u64> {
        self.inner.stream_version(stream_id).await
    }
    async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<bool> {
        self.inner.wait_for_events(after, timeout).await
    }
}

impl SnapshotStore for Contended {
    async fn load_snapshot(&self, s: &str, t: &str, v: u32) -> Result<Option<Snapshot>> {
        self.inner.load_snapshot(s, t, v).await
    }
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<bool> {
        self.inner.save_snapshot(snapshot).await
    }
}

#[tokio::test]
async fn a_conflict_that_outlives_the_retries_is_returned_typed() {
    let store = Contended {
        inner: MemoryEventStore::new(),
        appends: Arc::default(),
    };
    let counters = Repository::<Counter, _>::new(store.clone())
        .with_options(RepositoryOptions::default().max_conflict_retries(2));
    let err = counters.execute("a", 1).await.unwrap_err();
    match err {
        ExecuteError::Store(e @ Error::Conflict { .. }) => assert!(e.is_conflict()),
        other => panic!("expected a conflict, got {other}"),
    }
    assert_eq!(
        store.appends.load(Ordering::SeqCst),
        3,
        "one try plus two retries"
    );
    let stored = store
        .inner
        .read_stream("counter-a", ReadStream::all())
        .await
        .expect("read");
    assert!(
        stored.iter().all(|e| e.payload == br#"{"by":100}"#),
        "the refused command's event landed"
    );
}

#[tokio::test]
async fn unreadable_streams_give_typed_errors_and_lose_nothing() {
    let store = MemoryEventStore::new();
    let counters = repo(store.clone());
    counters.execute("a", 1).await.expect("bump");
    let unknown = NewEvent::new("frozen", 1, Encoding::Json, b"{}".to_vec());
    store
        .append_to_stream("counter-a", ExpectedVersion::Exact(1), vec![unknown])
        .await
        .expect("append");
    let err = counters.load("a").await.unwrap_err();
    assert!(
        matches!(&err, Error::UnknownEventType { event_type, stream_version: 2, .. } if event_type == "frozen"),
        "{err}"
    );
    let err = counters.execute("a", 1).await.unwrap_err();
    assert!(
        matches!(err, ExecuteError::Store(Error::UnknownEventType { .. })),
        "{err}"
    );

    let corrupt = NewEvent::new("bumped", 2, Encoding::Json, br#"{"by":"many"}"#.to_vec());
    store
        .append_to_stream("counter-b", ExpectedVersion::NoStream, vec![corrupt])
        .await
        .expect("append");
    let err = counters.load("b").await.unwrap_err();
    assert!(
        matches!(&err, Error::Decode { stream_id, stream_version: 1, .. } if stream_id == "counter-b"),
        "{err}"
    );
    assert_eq!(
        store.len(),
        3,
        "reading bad events must not change the store"
    );
}

#[tokio::test]
async fn old_schema_versions_are_upcast_on_load() {
    let store = MemoryEventStore::new();
    let v1 = NewEvent::new("bumped", 1, Encoding::Json, br#"{"amount":4}"#.to_vec());
    store
        .append_to_stream("counter-a", ExpectedVersion::NoStream, vec![v1])
        .await
        .expect("append");
    let counters = repo(store).with_upcasters(Upcasters::new().json("bumped", 1, |mut v| {
        Ok(serde_json::json!({ "by": v["amount"].take() }))
    }));
    let done = counters.execute("a", 1).await.expect("bump after upcast");
    assert_eq!((done.state.total, done.version), (5, 2));
}

/// A snapshot that claims a version past the end of its stream (left from events that never
/// committed, or from a recreated stream) is ignored: commands replay and go on, instead of
/// conflicting forever at a version no append can match.
#[tokio::test]
async fn a_snapshot_past_the_end_of_its_stream_is_ignored() {
    let store = MemoryEventStore::new();
    let counters = repo(store.clone());
    counters.execute("a", 1).await.expect("bump");
    counters.execute("a", 2).await.expect("bump");
    let ahead = Encoding::Postcard
        .encode(&Counter {
            total: 999,
            bumps: 10,
        })
        .expect("encode");
    store
        .save_snapshot(Snapshot {
            stream_id: "counter-a".into(),
            aggregate_type: "counter".into(),
            schema_version: 1,
            stream_version: 10,
            encoding: Encoding::Postcard,
            payload: ahead,
            taken_at: chrono::Utc::now(),
        })
        .await
        .expect("save");
    let loaded = counters.load("a").await.expect("load");
    assert_eq!(
        (loaded.state.total, loaded.version, loaded.from_snapshot),
        (3, 2, None)
    );
    let done = counters.execute("a", 4).await.expect("a command after it");
    assert_eq!((done.state.total, done.version), (7, 3));
}
