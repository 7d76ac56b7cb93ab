//! Idempotent appends: an append whose events are all stored, by one earlier append, on the
//! same streams in the same order, returns that append's result; anything else that reuses
//! stored event ids is refused with a typed error and writes nothing.

use super::{event, events, settled, unique, version_of};
use crate::{AppendResult, Error, EventStore, ExpectedVersion, ReadAll, StreamAppend};

fn with_ids(template: &[crate::NewEvent], n: u64) -> Vec<crate::NewEvent> {
    template.iter().take(n as usize).cloned().collect()
}

#[track_caller]
fn expect_duplicate(result: crate::Result<AppendResult>, what: &str) {
    assert!(
        matches!(result, Err(Error::DuplicateEvent { .. })),
        "{what}: expected a duplicate-event error, got {result:?}"
    );
}

/// Repeating an append returns its original result, whatever the expected version and
/// however far the streams moved on since; the log holds each event once.
pub async fn idempotent_appends<S: EventStore>(store: S) {
    let start = store.head().await.expect("head");
    let (a, b, c) = (unique("idem-a"), unique("idem-b"), unique("idem-c"));

    // One event creating a stream (the single-event statement), then repeated under every
    // expected version, before and after the stream moves on.
    let one = vec![event("e", 1)];
    let first = store
        .append_to_stream(&a, ExpectedVersion::NoStream, one.clone())
        .await
        .expect("first append");
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(0),
        ExpectedVersion::Any,
        ExpectedVersion::StreamExists,
        ExpectedVersion::Exact(1),
        ExpectedVersion::Exact(99),
    ] {
        let again = store
            .append_to_stream(&a, expected, one.clone())
            .await
            .unwrap_or_else(|e| panic!("repeat with {expected}: {e}"));
        assert_eq!(again, first, "repeat with {expected} changed the result");
    }

    // Several events to an existing stream, repeated after others appended to it.
    let three = events("e", 3);
    let second = store
        .append_to_stream(&a, ExpectedVersion::Exact(1), three.clone())
        .await
        .expect("second append");
    assert_eq!(second.version(), 4);
    store
        .append_to_stream(&a, ExpectedVersion::Any, events("e", 2))
        .await
        .expect("someone else appends");
    for expected in [
        ExpectedVersion::Exact(1),
        ExpectedVersion::Any,
        ExpectedVersion::NoStream,
    ] {
        let again = store
            .append_to_stream(&a, expected, three.clone())
            .await
            .unwrap_or_else(|e| panic!("repeat of three with {expected}: {e}"));
        assert_eq!(again, second, "repeat of three with {expected}");
    }
    let again = store
        .append_to_stream(&a, ExpectedVersion::Any, one.clone())
        .await
        .expect("the first append, repeated last");
    assert_eq!(again, first);

    // Several streams, one of them only checked (no events): the repeat reports the
    // versions as first recorded, even after b moved on.
    store
        .append_to_stream(&b, ExpectedVersion::NoStream, events("e", 1))
        .await
        .expect("seed b");
    let multi = vec![
        StreamAppend::new(&c, ExpectedVersion::NoStream, events("e", 2)),
        StreamAppend::new(&b, ExpectedVersion::Exact(1), vec![]),
        StreamAppend::new(&a, ExpectedVersion::Any, events("e", 1)),
    ];
    let third = store.append(multi.clone()).await.expect("multi-stream");
    store
        .append_to_stream(&b, ExpectedVersion::Exact(1), events("e", 2))
        .await
        .expect("b moves on");
    let again = store.append(multi).await.expect("multi-stream repeat");
    assert_eq!(again, third, "a multi-stream repeat changed the result");
    assert_eq!(
        again.streams.iter().map(|s| s.version).collect::<Vec<_>>(),
        [2, 1, 7]
    );

    // Every event is in the log once.
    let head = settled(&store, third.position).await;
    let all = store
        .read_all(ReadAll::after(start).limit(1_000))
        .await
        .expect("read_all");
    assert_eq!(all.last().map(|e| e.position), Some(head));
    let mut ids: Vec<_> = all.iter().map(|e| e.event_id).collect();
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "a repeated append wrote an event twice");
    assert_eq!(count, 1 + 3 + 2 + 1 + 2 + 1 + 2, "events missing or extra");
    assert_eq!(version_of(&store, &a).await, 7);
}

/// Reusing stored event ids in anything but the same append is refused, and nothing of
/// the refused append is written: only some of them, one after a new event, on another
/// stream, in another order, split over streams differently, or two appends' events as
/// one.
pub async fn repeats_that_are_not_the_same_append<S: EventStore>(store: S) {
    let (a, b) = (unique("dup-a"), unique("dup-b"));
    let pair = events("e", 2);
    store
        .append_to_stream(&a, ExpectedVersion::NoStream, pair.clone())
        .await
        .expect("append a pair");
    let later = vec![event("e", 10)];
    let third = store
        .append_to_stream(&a, ExpectedVersion::Exact(2), later.clone())
        .await
        .expect("append a third");
    let head = settled(&store, third.position).await;

    let mut more = pair.clone();
    more.push(event("e", 3));
    let cases: Vec<(&str, Vec<StreamAppend>)> = vec![
        (
            "the pair plus a new event",
            vec![StreamAppend::new(&a, ExpectedVersion::Any, more)],
        ),
        (
            "a new event, then a stored one",
            vec![StreamAppend::new(
                &a,
                ExpectedVersion::Any,
                vec![event("e", 4), pair[0].clone()],
            )],
        ),
        (
            "only the first of the pair",
            vec![StreamAppend::new(
                &a,
                ExpectedVersion::Any,
                with_ids(&pair, 1),
            )],
        ),
        (
            "the pair on another stream",
            vec![StreamAppend::new(&b, ExpectedVersion::Any, pair.clone())],
        ),
        (
            "the pair in the other order",
            vec![StreamAppend::new(
                &a,
                ExpectedVersion::Any,
                vec![pair[1].clone(), pair[0].clone()],
            )],
        ),
        (
            "the pair split over two streams",
            vec![
                StreamAppend::new(&a, ExpectedVersion::Any, with_ids(&pair, 1)),
                StreamAppend::new(&b, ExpectedVersion::Any, vec![pair[1].clone()]),
            ],
        ),
        (
            "two appends' events as one",
            vec![StreamAppend::new(
                &a,
                ExpectedVersion::Any,
                pair.iter().chain(&later).cloned().collect(),
            )],
        ),
    ];
    for (what, appends) in cases {
        expect_duplicate(store.append(appends).await, what);
    }
    assert_eq!(
        version_of(&store, &a).await,
        3,
        "a refused append wrote to a"
    );
    assert_eq!(
        version_of(&store, &b).await,
        0,
        "a refused append wrote to b"
    );
    assert_eq!(
        store.head().await.expect("head"),
        head,
        "a refused append moved the head"
    );

    let twice = event("e", 5);
    let r = store
        .append_to_stream(&b, ExpectedVersion::Any, vec![twice.clone(), twice])
        .await;
    assert!(
        matches!(r, Err(Error::InvalidInput(_))),
        "one event id twice in one append: {r:?}"
    );
    assert_eq!(version_of(&store, &b).await, 0);
}
