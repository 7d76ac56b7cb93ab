//! The store conformance suite: the [`EventStore`] and [`SnapshotStore`] contract as
//! executable checks. A store that passes [`run`] keeps every promise annals makes.
//!
//! ```no_run
//! # async fn demo<S: annals_core::EventStore + annals_core::SnapshotStore + Clone + 'static>(make: fn() -> S) {
//! // in a store crate's tests/conformance.rs, on a multi-threaded tokio runtime:
//! annals_core::testkit::conformance::run(|| async move { make() }).await;
//! # }
//! ```

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::{
        atomic::{AtomicUsize, Ordering::SeqCst},
        Arc,
    },
    time::{Duration, Instant},
};

use uuid::Uuid;

use crate::{
    AppendResult, Encoding, Error, EventStore, ExpectedVersion, Metadata, NewEvent, Position,
    ReadAll, ReadStream, RecordedEvent, Snapshot, SnapshotStore, StreamAppend,
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
    snapshots(fresh_store().await).await;
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

/// `Any` appends whatever the version, creating the stream if needed.
pub async fn expected_version_any<S: EventStore>(store: S) {
    let s = unique("any");
    let r = store
        .append_to_stream(&s, ExpectedVersion::Any, events("e", 2))
        .await;
    assert_eq!(r.expect("append to a new stream with Any").version(), 2);
    let r = store
        .append_to_stream(&s, ExpectedVersion::Any, events("e", 1))
        .await;
    assert_eq!(
        r.expect("append to an existing stream with Any").version(),
        3
    );
    assert_eq!(version_of(&store, &s).await, 3);
}

/// `NoStream` succeeds once and then conflicts with the actual version.
pub async fn expected_version_no_stream<S: EventStore>(store: S) {
    let s = unique("nostream");
    let r = store
        .append_to_stream(&s, ExpectedVersion::NoStream, events("e", 2))
        .await;
    assert_eq!(r.expect("NoStream on a new stream").version(), 2);
    let r = store
        .append_to_stream(&s, ExpectedVersion::NoStream, events("e", 1))
        .await;
    expect_conflict(r, &s, 2);
    let r = store
        .append_to_stream(&s, ExpectedVersion::Exact(0), events("e", 1))
        .await;
    expect_conflict(r, &s, 2);
    assert_eq!(
        version_of(&store, &s).await,
        2,
        "a refused append wrote events"
    );
}

/// `StreamExists` conflicts on a missing stream and succeeds on an existing one.
pub async fn expected_version_stream_exists<S: EventStore>(store: S) {
    let s = unique("exists");
    let r = store
        .append_to_stream(&s, ExpectedVersion::StreamExists, events("e", 1))
        .await;
    expect_conflict(r, &s, 0);
    assert_eq!(version_of(&store, &s).await, 0);
    let read = store
        .read_stream(&s, ReadStream::all())
        .await
        .expect("read");
    assert!(read.is_empty(), "a refused append created the stream");
    store
        .append_to_stream(&s, ExpectedVersion::NoStream, events("e", 1))
        .await
        .expect("create");
    let r = store
        .append_to_stream(&s, ExpectedVersion::StreamExists, events("e", 1))
        .await;
    assert_eq!(r.expect("StreamExists on an existing stream").version(), 2);
}

/// `Exact(n)` succeeds only at version `n`; an empty append only checks the version.
pub async fn expected_version_exact<S: EventStore>(store: S) {
    let s = unique("exact");
    let r = store
        .append_to_stream(&s, ExpectedVersion::Exact(1), events("e", 1))
        .await;
    expect_conflict(r, &s, 0);
    let r = store
        .append_to_stream(&s, ExpectedVersion::Exact(0), events("e", 3))
        .await;
    assert_eq!(r.expect("Exact(0) on a new stream").version(), 3);
    let r = store
        .append_to_stream(&s, ExpectedVersion::Exact(2), events("e", 1))
        .await;
    expect_conflict(r, &s, 3);
    let r = store
        .append_to_stream(&s, ExpectedVersion::Exact(4), events("e", 1))
        .await;
    expect_conflict(r, &s, 3);
    let r = store
        .append_to_stream(&s, ExpectedVersion::Exact(3), events("e", 2))
        .await;
    assert_eq!(r.expect("Exact at the current version").version(), 5);
    let r = store
        .append_to_stream(&s, ExpectedVersion::Exact(5), vec![])
        .await;
    assert_eq!(r.expect("empty append at the right version").version(), 5);
    let r = store
        .append_to_stream(&s, ExpectedVersion::Exact(4), vec![])
        .await;
    expect_conflict(r, &s, 5);
    let versions: Vec<u64> = store
        .read_stream(&s, ReadStream::all())
        .await
        .expect("read")
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5], "stream versions are not gapless");
}

/// Two writers appending at the same expected version: exactly one wins, every time.
pub async fn concurrent_writers_one_wins<S: EventStore + Clone + 'static>(store: S) {
    for round in 0..20 {
        let s = unique("race");
        store
            .append_to_stream(&s, ExpectedVersion::NoStream, events("e", 1))
            .await
            .expect("seed");
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let store = store.clone();
                let s = s.clone();
                tokio::spawn(async move {
                    store
                        .append_to_stream(&s, ExpectedVersion::Exact(1), events("e", 2))
                        .await
                })
            })
            .collect();
        let mut wins = 0;
        let mut conflicts = 0;
        for task in tasks {
            match task.await.expect("writer task") {
                Ok(r) => {
                    assert_eq!(r.version(), 3);
                    wins += 1;
                }
                Err(e) if e.is_conflict() => conflicts += 1,
                Err(e) => panic!("round {round}: unexpected error {e}"),
            }
        }
        assert_eq!(
            (wins, conflicts),
            (1, 1),
            "round {round}: both or neither writer won"
        );
        assert_eq!(version_of(&store, &s).await, 3);
    }
}

/// A multi-stream append is all or nothing.
pub async fn multi_stream_all_or_nothing<S: EventStore>(store: S) {
    let (a, b, c) = (unique("multi-a"), unique("multi-b"), unique("multi-c"));
    let seeded = store
        .append_to_stream(&b, ExpectedVersion::NoStream, events("e", 1))
        .await
        .expect("seed b");
    let head_before = settled(&store, seeded.position).await;

    let refused = store
        .append(vec![
            StreamAppend::new(&a, ExpectedVersion::NoStream, events("e", 2)),
            StreamAppend::new(&b, ExpectedVersion::Exact(5), events("e", 1)),
            StreamAppend::new(&c, ExpectedVersion::Any, events("e", 1)),
        ])
        .await;
    expect_conflict(refused, &b, 1);
    assert_eq!(
        version_of(&store, &a).await,
        0,
        "part of a refused append landed in a"
    );
    assert_eq!(
        version_of(&store, &b).await,
        1,
        "part of a refused append landed in b"
    );
    assert_eq!(
        version_of(&store, &c).await,
        0,
        "part of a refused append landed in c"
    );
    assert_eq!(store.head().await.expect("head"), head_before);

    let done = store
        .append(vec![
            StreamAppend::new(&a, ExpectedVersion::NoStream, events("e", 2)),
            StreamAppend::new(&b, ExpectedVersion::Exact(1), events("e", 1)),
            StreamAppend::new(&c, ExpectedVersion::Any, events("e", 3)),
        ])
        .await
        .expect("multi-stream append");
    let versions: Vec<(String, u64)> = done
        .streams
        .iter()
        .map(|s| (s.stream_id.clone(), s.version))
        .collect();
    assert_eq!(versions, [(a.clone(), 2), (b.clone(), 2), (c.clone(), 3)]);
    settled(&store, done.position).await;
    let all = store
        .read_all(ReadAll::after(head_before))
        .await
        .expect("read_all");
    assert_eq!(
        all.len(),
        6,
        "a multi-stream append is one contiguous batch in the log"
    );
    assert_eq!(all.last().map(|e| e.position), Some(done.position));

    let duplicate = store
        .append(vec![
            StreamAppend::new(&a, ExpectedVersion::Any, events("e", 1)),
            StreamAppend::new(&a, ExpectedVersion::Any, events("e", 1)),
        ])
        .await;
    assert!(
        matches!(duplicate, Err(Error::InvalidInput(_))),
        "same stream twice: {duplicate:?}"
    );
    assert_eq!(version_of(&store, &a).await, 2);
}

/// Stream reads: forward and backward from a version, with limits.
pub async fn stream_reads<S: EventStore>(store: S) {
    let s = unique("read");
    store
        .append_to_stream(&s, ExpectedVersion::NoStream, events("e", 10))
        .await
        .expect("append");
    store
        .append_to_stream(&unique("other"), ExpectedVersion::Any, events("e", 3))
        .await
        .expect("other");
    let versions = |events: Vec<RecordedEvent>| -> Vec<u64> {
        assert!(
            events.iter().all(|e| e.stream_id == s),
            "read another stream's events"
        );
        events.iter().map(|e| e.stream_version).collect()
    };
    let read = |r| store.read_stream(&s, r);
    assert_eq!(
        versions(read(ReadStream::all()).await.expect("all")),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        versions(read(ReadStream::forward_from(8)).await.expect("fwd")),
        [8, 9, 10]
    );
    assert_eq!(
        versions(
            read(ReadStream::forward_from(3).limit(2))
                .await
                .expect("fwd lim")
        ),
        [3, 4]
    );
    assert_eq!(
        versions(
            read(ReadStream::backward_from(u64::MAX).limit(3))
                .await
                .expect("bwd")
        ),
        [10, 9, 8]
    );
    assert_eq!(
        versions(read(ReadStream::backward_from(2)).await.expect("bwd 2")),
        [2, 1]
    );
    assert!(read(ReadStream::backward_from(0))
        .await
        .expect("bwd 0")
        .is_empty());
    assert!(read(ReadStream::forward_from(11))
        .await
        .expect("past end")
        .is_empty());
    assert!(store
        .read_stream(&unique("missing"), ReadStream::all())
        .await
        .expect("missing")
        .is_empty());
    let payloads: Vec<Vec<u8>> = read(ReadStream::all())
        .await
        .expect("all")
        .into_iter()
        .map(|e| e.payload)
        .collect();
    let last: serde_json::Value = serde_json::from_slice(&payloads[9]).expect("stored JSON");
    assert_eq!(
        last,
        serde_json::json!({"n": 10}),
        "payload changed in storage"
    );
}

/// The global log: ascending positions, `after` is exclusive, limits and type filters.
pub async fn global_order_and_filters<S: EventStore>(store: S) {
    let start = store.head().await.expect("head");
    let (a, b) = (unique("g-a"), unique("g-b"));
    let mut expected = Vec::new();
    let mut last = start;
    for i in 0..5u64 {
        let stream = if i % 2 == 0 { &a } else { &b };
        let batch = vec![event("opened", i), event("noted", i)];
        expected.extend(batch.iter().map(|e| e.event_id));
        let r = store
            .append_to_stream(stream, ExpectedVersion::Any, batch)
            .await
            .expect("append");
        last = r.position;
    }
    settled(&store, last).await;
    let all = store
        .read_all(ReadAll::after(start))
        .await
        .expect("read_all");
    let ids: Vec<Uuid> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, expected, "the global log is not in append order");
    assert!(
        all.windows(2).all(|w| w[0].position < w[1].position),
        "positions do not ascend"
    );
    assert!(
        all.windows(2)
            .all(|w| w[0].global_position() < w[1].global_position()),
        "sequence numbers are not unique and ascending"
    );

    let mut paged = Vec::new();
    let mut after = start;
    loop {
        let page = store
            .read_all(ReadAll::after(after).limit(3))
            .await
            .expect("page");
        assert!(page.len() <= 3, "limit not honoured");
        let Some(last) = page.last() else { break };
        after = last.position;
        paged.extend(page.iter().map(|e| e.event_id));
    }
    assert_eq!(
        paged, expected,
        "paging with `after` skipped or repeated events"
    );

    let noted = store
        .read_all(ReadAll::after(start).event_types(["noted"]))
        .await
        .expect("filtered");
    assert_eq!(noted.len(), 5);
    assert!(noted.iter().all(|e| e.event_type == "noted"));
    let filtered_page = store
        .read_all(ReadAll::after(start).event_types(["opened"]).limit(2))
        .await
        .expect("filtered page");
    assert_eq!(filtered_page.len(), 2);
    assert!(filtered_page.iter().all(|e| e.event_type == "opened"));
    let none = store
        .read_all(ReadAll::after(start).event_types(["nothing-of-this-type"]))
        .await
        .expect("filtered");
    assert!(none.is_empty());
}

/// The head is the last visible event's position.
pub async fn head_position<S: EventStore>(store: S) {
    let before = store.head().await.expect("head");
    let r = store
        .append_to_stream(&unique("head"), ExpectedVersion::Any, events("e", 3))
        .await;
    let r = r.expect("append");
    let head = settled(&store, r.position).await;
    assert!(head > before, "head did not move");
    assert_eq!(head, r.position, "head is not the last appended position");
    let last = store
        .read_all(ReadAll::after(before))
        .await
        .expect("read_all");
    assert_eq!(last.last().map(|e| e.position), Some(head));
    let refused = store
        .append_to_stream(&unique("head"), ExpectedVersion::Exact(7), events("e", 1))
        .await;
    assert!(refused.is_err());
    assert_eq!(
        store.head().await.expect("head"),
        head,
        "a refused append moved the head"
    );
}

/// `wait_for_events` returns at once when events exist, wakes up on an append, times out.
pub async fn live_waiting<S: EventStore + Clone + 'static>(store: S) {
    let head = store.head().await.expect("head");
    let started = Instant::now();
    let woke = store
        .wait_for_events(head, Duration::from_millis(200))
        .await
        .expect("wait");
    assert!(!woke, "woke up with nothing new");
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "returned before the timeout"
    );

    let waiter = {
        let store = store.clone();
        tokio::spawn(async move { store.wait_for_events(head, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    store
        .append_to_stream(&unique("live"), ExpectedVersion::Any, events("e", 1))
        .await
        .expect("append");
    let woke = waiter.await.expect("waiter task").expect("wait");
    assert!(woke, "the waiter did not see the append");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "wake-up took too long"
    );
    let at_once = store
        .wait_for_events(head, Duration::from_secs(10))
        .await
        .expect("wait");
    assert!(at_once, "did not return at once with events already there");
}

/// Ids, types, schema versions, metadata and both encodings survive storage.
pub async fn envelope_round_trip<S: EventStore>(store: S) {
    let s = unique("envelope");
    let mut extra = std::collections::BTreeMap::new();
    extra.insert("tenant".to_owned(), serde_json::json!("acme"));
    let metadata = Metadata {
        correlation_id: Some(Uuid::now_v7()),
        causation_id: Some(Uuid::now_v7()),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
        actor: Some("alice".to_owned()),
        extra,
    };
    let json = NewEvent::new(
        "typed",
        3,
        Encoding::Json,
        br#"{"a":[1,2],"b":"x"}"#.to_vec(),
    )
    .with_metadata(metadata.clone());
    let binary = NewEvent::new("binary", 1, Encoding::Postcard, vec![0, 1, 2, 255]);
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    // Both events in one append, then each alone (a store may take another path for a
    // single event, creating or extending its stream).
    store
        .append_to_stream(
            &s,
            ExpectedVersion::NoStream,
            vec![json.clone(), binary.clone()],
        )
        .await
        .expect("append");
    let one_by_one = unique("envelope-single");
    let json_alone = NewEvent {
        event_id: Uuid::now_v7(),
        ..json.clone()
    };
    let binary_alone = NewEvent {
        event_id: Uuid::now_v7(),
        ..binary.clone()
    };
    store
        .append_to_stream(
            &one_by_one,
            ExpectedVersion::NoStream,
            vec![json_alone.clone()],
        )
        .await
        .expect("append one creating the stream");
    store
        .append_to_stream(
            &one_by_one,
            ExpectedVersion::Exact(1),
            vec![binary_alone.clone()],
        )
        .await
        .expect("append one to the stream");
    for (stream, json, binary) in [
        (&s, &json, &binary),
        (&one_by_one, &json_alone, &binary_alone),
    ] {
        let read = store
            .read_stream(stream, ReadStream::all())
            .await
            .expect("read");
        assert_eq!(read.len(), 2);
        let (r0, r1) = (&read[0], &read[1]);
        assert_eq!(r0.event_id, json.event_id);
        assert_eq!((r0.event_type.as_str(), r0.schema_version), ("typed", 3));
        assert_eq!(r0.metadata, metadata, "metadata changed in storage");
        assert_eq!(r0.encoding, Encoding::Json);
        let v: serde_json::Value = serde_json::from_slice(&r0.payload).expect("stored JSON");
        assert_eq!(v, serde_json::json!({"a": [1, 2], "b": "x"}));
        assert!(
            r0.recorded_at >= before
                && r0.recorded_at <= chrono::Utc::now() + chrono::Duration::seconds(5)
        );
        assert_eq!(r1.event_id, binary.event_id);
        assert_eq!(r1.encoding, Encoding::Postcard);
        assert_eq!(
            r1.payload,
            [0, 1, 2, 255],
            "binary payload changed in storage"
        );
        assert_eq!(r1.metadata, Metadata::default());
    }
}

/// A malformed JSON payload is refused with a typed error, and nothing of its batch lands.
pub async fn invalid_input_writes_nothing<S: EventStore>(store: S) {
    let s = unique("invalid");
    let head = store.head().await.expect("head");
    let bad = NewEvent::new("bad", 1, Encoding::Json, b"{not json".to_vec());
    let r = store
        .append_to_stream(&s, ExpectedVersion::Any, vec![event("ok", 1), bad])
        .await;
    assert!(
        matches!(r, Err(Error::InvalidInput(_))),
        "bad JSON payload: {r:?}"
    );
    assert_eq!(
        version_of(&store, &s).await,
        0,
        "part of a refused batch landed"
    );
    assert_eq!(store.head().await.expect("head"), head);
    let first = event("ok", 1);
    let again = first.clone();
    store
        .append_to_stream(&s, ExpectedVersion::NoStream, vec![first])
        .await
        .expect("append");
    let r = store
        .append_to_stream(&unique("other"), ExpectedVersion::Any, vec![again])
        .await;
    assert!(
        matches!(r, Err(Error::InvalidInput(_))),
        "an event id stored twice: {r:?}"
    );
    let r = store.append(vec![]).await.expect("empty append");
    assert!(r.streams.is_empty());
}

/// Snapshots: keyed by stream, aggregate type and schema version; only newer ones replace.
pub async fn snapshots<S: EventStore + SnapshotStore>(store: S) {
    let s = unique("snap");
    let snap = |version: u64, schema: u32, payload: &[u8]| Snapshot {
        stream_id: s.clone(),
        aggregate_type: "account".to_owned(),
        schema_version: schema,
        stream_version: version,
        encoding: Encoding::Postcard,
        payload: payload.to_vec(),
        taken_at: chrono::Utc::now(),
    };
    assert_eq!(
        store.load_snapshot(&s, "account", 1).await.expect("load"),
        None
    );
    assert!(store
        .save_snapshot(snap(5, 1, b"five"))
        .await
        .expect("save"));
    assert!(!store
        .save_snapshot(snap(3, 1, b"three"))
        .await
        .expect("save older"));
    assert!(!store
        .save_snapshot(snap(5, 1, b"again"))
        .await
        .expect("save same"));
    let loaded = store
        .load_snapshot(&s, "account", 1)
        .await
        .expect("load")
        .expect("snapshot");
    assert_eq!(
        (loaded.stream_version, loaded.payload.as_slice()),
        (5, &b"five"[..])
    );
    assert!(store
        .save_snapshot(snap(8, 1, b"eight"))
        .await
        .expect("save newer"));
    assert!(store
        .save_snapshot(snap(2, 2, b"v2"))
        .await
        .expect("other schema version"));
    let v1 = store
        .load_snapshot(&s, "account", 1)
        .await
        .expect("load")
        .expect("v1");
    assert_eq!(v1.payload, b"eight");
    let v2 = store
        .load_snapshot(&s, "account", 2)
        .await
        .expect("load")
        .expect("v2");
    assert_eq!(v2.payload, b"v2");
    assert_eq!(
        store
            .load_snapshot(&s, "other-type", 1)
            .await
            .expect("load"),
        None
    );

    store
        .append_to_stream(&s, ExpectedVersion::NoStream, events("e", 10))
        .await
        .expect("append");
    let (snapshot, tail) = store
        .load_stream(&s, "account", 1)
        .await
        .expect("load_stream");
    assert_eq!(snapshot.map(|s| s.stream_version), Some(8));
    assert_eq!(
        tail.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        [9, 10]
    );
    let (snapshot, tail) = store
        .load_stream(&s, "account", 9)
        .await
        .expect("load_stream");
    assert_eq!(snapshot, None);
    assert_eq!(tail.len(), 10, "without a snapshot the whole stream loads");
}

/// What a [`concurrent_appends_with_tailing_reader`] run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TortureReport {
    /// Acknowledged events, each seen exactly once by the tailing reader.
    pub events: usize,
    /// Appends refused with a conflict and retried.
    pub conflicts: u64,
}

/// Many writers append to overlapping streams (with real conflicts and retries) while a
/// reader tails the global log. The reader must see every acknowledged event exactly once,
/// in position order and per-stream version order, and never an event whose append failed.
///
/// # Panics
///
/// When any of that does not hold, or the run takes more than two minutes.
pub async fn concurrent_appends_with_tailing_reader<S: EventStore + Clone + 'static>(
    store: S,
    writers: usize,
    appends_per_writer: usize,
) -> TortureReport {
    let run = unique("torture");
    let streams: Vec<String> = (0..writers.max(2) * 3 / 4)
        .map(|i| format!("{run}-{i}"))
        .collect();
    let start = store.head().await.expect("head");
    let done = Arc::new(AtomicUsize::new(0));
    let acked_count = Arc::new(AtomicUsize::new(0));

    // The reader stops once every writer is done and it has seen as many events as were
    // acknowledged (a transaction elsewhere in the database may delay the last ones).
    let reader = {
        let store = store.clone();
        let (done, acked_count) = (done.clone(), acked_count.clone());
        tokio::spawn(async move {
            let mut seen: Vec<RecordedEvent> = Vec::new();
            let mut after = start;
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let finished = done.load(SeqCst) == writers;
                let page = store
                    .read_all(ReadAll::after(after).limit(7))
                    .await
                    .expect("read_all");
                if let Some(last) = page.last() {
                    assert!(last.position > after, "read_all went backwards");
                    after = last.position;
                    seen.extend(page);
                } else if finished && seen.len() >= acked_count.load(SeqCst) {
                    return seen;
                } else {
                    store
                        .wait_for_events(after, Duration::from_millis(50))
                        .await
                        .expect("wait");
                }
                assert!(
                    Instant::now() < deadline,
                    "tailing reader did not finish in time ({} of {} seen)",
                    seen.len(),
                    acked_count.load(SeqCst)
                );
            }
        })
    };

    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let streams = streams.clone();
        let (done, acked_count) = (done.clone(), acked_count.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut refused = Vec::new();
            let mut conflicts = 0u64;
            for i in 0..appends_per_writer {
                // Every fourth append spans two streams, so multi-stream appends race with
                // single-stream ones on the same rows.
                let span = if i % 4 == 3 { 2 } else { 1 };
                let targets: Vec<&String> = (0..span)
                    .map(|k| &streams[(w + i + k) % streams.len()])
                    .collect();
                loop {
                    let mut appends = Vec::new();
                    for stream in &targets {
                        let version = store.stream_version(stream).await.expect("version");
                        let batch: Vec<NewEvent> = (0..1 + (i % 3) as u64)
                            .map(|n| event("torture", n))
                            .collect();
                        appends.push(StreamAppend::new(
                            stream.as_str(),
                            ExpectedVersion::Exact(version),
                            batch,
                        ));
                    }
                    tokio::task::yield_now().await;
                    let ids: Vec<(Uuid, String)> = appends
                        .iter()
                        .flat_map(|a| a.events.iter().map(|e| (e.event_id, a.stream_id.clone())))
                        .collect();
                    match store.append(appends).await {
                        Ok(_) => {
                            acked_count.fetch_add(ids.len(), SeqCst);
                            acked.extend(ids);
                            break;
                        }
                        Err(e) if e.is_conflict() => {
                            conflicts += 1;
                            refused.extend(ids.into_iter().map(|(id, _)| id));
                        }
                        Err(e) => panic!("writer {w}: {e}"),
                    }
                }
            }
            done.fetch_add(1, SeqCst);
            (acked, refused, conflicts)
        }));
    }
    let mut acked: HashMap<Uuid, String> = HashMap::new();
    let mut refused: HashSet<Uuid> = HashSet::new();
    let mut conflicts = 0;
    for task in tasks {
        let (a, r, c) = task.await.expect("writer task");
        acked.extend(a);
        refused.extend(r);
        conflicts += c;
    }
    let seen = reader.await.expect("reader task");

    let mut once = HashSet::new();
    for e in &seen {
        assert!(once.insert(e.event_id), "event {} seen twice", e.event_id);
        assert!(
            !refused.contains(&e.event_id),
            "event {} of a refused append was seen",
            e.event_id
        );
        assert!(
            acked.contains_key(&e.event_id),
            "event {} was never acknowledged",
            e.event_id
        );
    }
    let missing = acked.keys().filter(|id| !once.contains(*id)).count();
    assert_eq!(
        missing, 0,
        "{missing} acknowledged events were never seen by the tailing reader"
    );
    assert!(
        seen.windows(2).all(|w| w[0].position < w[1].position),
        "positions out of order"
    );
    let mut next_version: HashMap<&str, u64> = HashMap::new();
    for e in &seen {
        let next = next_version.entry(e.stream_id.as_str()).or_insert(1);
        assert_eq!(
            e.stream_version, *next,
            "stream {} out of order in the global log",
            e.stream_id
        );
        *next += 1;
    }
    assert!(
        conflicts > 0,
        "the writers never conflicted; the test did not test concurrency"
    );
    tracing::info!(events = seen.len(), conflicts, "torture run complete");
    TortureReport {
        events: seen.len(),
        conflicts,
    }
}
