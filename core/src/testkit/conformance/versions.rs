//! Expected versions, atomicity of multi-stream appends, and one winner among racing
//! writers.

use super::{events, expect_conflict, settled, unique, version_of};
use crate::{Error, EventStore, ExpectedVersion, ReadAll, ReadStream, StreamAppend};

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
