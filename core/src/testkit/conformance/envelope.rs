//! What storage keeps (ids, types, metadata, both encodings) and what it refuses before
//! writing anything (malformed payloads, reused ids, stream ids no store accepts).

use uuid::Uuid;

use super::{event, events, unique, version_of};
use crate::{
    Encoding, Error, EventStore, ExpectedVersion, Metadata, NewEvent, ReadStream, StreamAppend,
    MAX_STREAM_ID_BYTES,
};

/// Ids, types, schema versions, metadata and both encodings survive storage.
pub async fn envelope_round_trip<S: EventStore>(store: S) {
    let s = unique("envelope");
    let mut extra = std::collections::BTreeMap::new();
    extra.insert("tenant".to_owned(), serde_json::json!("acme"));
    let metadata = Metadata {
        correlation_id: Some(Uuid::now_v7()),
        causation_id: Some(Uuid::now_v7()),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
        tracestate: Some("vendor=abc,other=1".to_owned()),
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
        assert_eq!(
            store.recorded_at(r0.position).await.expect("recorded_at"),
            Some(r0.recorded_at),
            "recorded_at by position differs from the event's"
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
        matches!(r, Err(Error::DuplicateEvent { .. })),
        "an event id stored on another stream: {r:?}"
    );
    let r = store.append(vec![]).await.expect("empty append");
    assert!(r.streams.is_empty());
}

/// Stream ids are checked before anything is written, the same on every store: empty, NUL
/// and longer than [`MAX_STREAM_ID_BYTES`] are refused with a typed error; the longest
/// allowed id (in multi-byte characters too) round-trips.
pub async fn stream_id_limits<S: EventStore>(store: S) {
    let head = store.head().await.expect("head");
    let too_long = "x".repeat(MAX_STREAM_ID_BYTES + 1);
    let with_nul = format!("{}\0tail", unique("nul"));
    for (what, id) in [
        ("an empty stream id", ""),
        ("a stream id over the limit", too_long.as_str()),
        ("a stream id with NUL", with_nul.as_str()),
    ] {
        for events in [events("e", 1), events("e", 3)] {
            let single = store
                .append_to_stream(id, ExpectedVersion::Any, events.clone())
                .await;
            assert!(
                matches!(single, Err(Error::InvalidInput(_))),
                "{what} ({} events): {single:?}",
                events.len()
            );
            let multi = store
                .append(vec![
                    StreamAppend::new(unique("fine"), ExpectedVersion::Any, events.clone()),
                    StreamAppend::new(id, ExpectedVersion::NoStream, vec![event("e", 9)]),
                ])
                .await;
            assert!(
                matches!(multi, Err(Error::InvalidInput(_))),
                "{what} in a multi-stream append: {multi:?}"
            );
        }
    }
    assert_eq!(
        store.head().await.expect("head"),
        head,
        "a refused append wrote something"
    );
    // 'é' is two bytes: the limit counts bytes, not characters.
    let prefix = unique("long");
    let longest = format!(
        "{prefix}{}",
        "é".repeat((MAX_STREAM_ID_BYTES - prefix.len()) / 2)
    );
    assert!(longest.len() <= MAX_STREAM_ID_BYTES && longest.len() >= MAX_STREAM_ID_BYTES - 1);
    store
        .append_to_stream(&longest, ExpectedVersion::NoStream, events("e", 2))
        .await
        .expect("the longest allowed stream id");
    let read = store
        .read_stream(&longest, ReadStream::all())
        .await
        .expect("read it back");
    assert_eq!(read.len(), 2);
    assert!(read.iter().all(|e| e.stream_id == longest));
    let over_in_chars = "é".repeat(MAX_STREAM_ID_BYTES / 2 + 1);
    let r = store
        .append_to_stream(&over_in_chars, ExpectedVersion::Any, events("e", 1))
        .await;
    assert!(
        matches!(r, Err(Error::InvalidInput(_))),
        "{} characters, {} bytes: {r:?}",
        over_in_chars.chars().count(),
        over_in_chars.len()
    );
}
