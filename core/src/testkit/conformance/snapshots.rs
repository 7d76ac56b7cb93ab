//! Snapshots: keyed by stream, aggregate type and schema version; only newer ones replace
//! older ones; one past the end of its stream is never used.

use super::{events, unique};
use crate::{Encoding, EventStore, ExpectedVersion, Snapshot, SnapshotStore};

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

/// A snapshot that claims a version past the end of its stream is not returned by
/// `load_stream`: the whole stream comes back instead (an aggregate loaded from it would
/// expect a version no append can match).
pub async fn snapshot_past_the_end_is_ignored<S: EventStore + SnapshotStore>(store: S) {
    let s = unique("snap-past");
    store
        .append_to_stream(&s, ExpectedVersion::NoStream, events("e", 3))
        .await
        .expect("append");
    let saved = store
        .save_snapshot(Snapshot {
            stream_id: s.clone(),
            aggregate_type: "account".to_owned(),
            schema_version: 1,
            stream_version: 10,
            encoding: Encoding::Postcard,
            payload: b"ten".to_vec(),
            taken_at: chrono::Utc::now(),
        })
        .await
        .expect("save");
    assert!(saved);
    let (snapshot, tail) = store
        .load_stream(&s, "account", 1)
        .await
        .expect("load_stream");
    assert_eq!(
        snapshot, None,
        "a snapshot past the end of its stream was used"
    );
    assert_eq!(
        tail.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        [1, 2, 3],
        "without a usable snapshot the whole stream loads"
    );
    // Once the stream reaches the snapshot's version the snapshot is fine again.
    store
        .append_to_stream(&s, ExpectedVersion::Exact(3), events("e", 7))
        .await
        .expect("append up to 10");
    let (snapshot, tail) = store
        .load_stream(&s, "account", 1)
        .await
        .expect("load_stream");
    assert_eq!(snapshot.map(|s| s.stream_version), Some(10));
    assert!(tail.is_empty());
}

/// `load_stream_to_fold` returns what `load_stream` does, in every field folding reads
/// (stream, version, position, type, schema version, encoding, payload): with a snapshot,
/// without one, and with one past the end of its stream.
pub async fn loads_to_fold_agree<S: EventStore + SnapshotStore>(store: S) {
    let s = unique("snap-fold");
    let mut written = events("e", 5);
    let mut binary = crate::NewEvent::new("b", 3, Encoding::Postcard, vec![1, 2, 3]);
    binary.metadata.correlation_id = Some(uuid::Uuid::now_v7());
    written.push(binary);
    store
        .append_to_stream(&s, ExpectedVersion::NoStream, written)
        .await
        .expect("append");
    let folded = |e: &crate::RecordedEvent| {
        (
            e.stream_id.clone(),
            e.stream_version,
            e.position,
            e.event_type.clone(),
            e.schema_version,
            e.encoding,
            e.payload.clone(),
        )
    };
    let snapshot_at = |version: u64| Snapshot {
        stream_id: s.clone(),
        aggregate_type: "account".to_owned(),
        schema_version: 1,
        stream_version: version,
        encoding: Encoding::Postcard,
        payload: vec![version as u8],
        taken_at: chrono::Utc::now(),
    };
    for (what, snapshot) in [
        ("no snapshot", None),
        ("a snapshot at 4", Some(4)),
        ("a snapshot past the end", Some(60)),
    ] {
        if let Some(version) = snapshot {
            store
                .save_snapshot(snapshot_at(version))
                .await
                .expect("save");
        }
        let (full_snapshot, full) = store.load_stream(&s, "account", 1).await.expect("load");
        let (lean_snapshot, lean) = store
            .load_stream_to_fold(&s, "account", 1)
            .await
            .expect("load to fold");
        assert_eq!(lean_snapshot, full_snapshot, "{what}: the snapshot differs");
        assert_eq!(
            lean.iter().map(folded).collect::<Vec<_>>(),
            full.iter().map(folded).collect::<Vec<_>>(),
            "{what}: the events differ in what folding reads"
        );
        assert!(!lean.is_empty(), "{what}: nothing to fold");
    }
}
