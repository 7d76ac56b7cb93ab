//! Reading streams and the global log: order, paging, filters, the head, live waiting.

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{event, events, settled, unique};
use crate::{EventStore, ExpectedVersion, ReadAll, ReadStream, RecordedEvent};

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
