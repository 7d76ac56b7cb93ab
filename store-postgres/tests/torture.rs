//! The global log under concurrency: a tailing reader never skips a committed event (even
//! one whose transaction commits late), never sees an uncommitted one, and appenders to
//! different streams do not wait on each other.

mod common;

use std::time::{Duration, Instant};

use annals_core::{testkit::conformance, EventStore, ExpectedVersion, Position, ReadAll};
use common::{event, TestDatabases};
use sqlx::{Connection, Executor};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_and_a_tailing_reader_see_every_event_exactly_once() {
    let dbs = TestDatabases::default();
    let store = dbs.store().await;
    let report = conformance::concurrent_appends_with_tailing_reader(store, 8, 300).await;
    assert!(
        report.events >= 2_000,
        "too few events to mean anything: {report:?}"
    );
    assert!(report.conflicts > 0, "no real conflicts: {report:?}");
    println!("{report:?}");
    dbs.drop_all().await;
}

/// A transaction that takes its position first but commits last must not be skipped: the
/// reader holds back until it commits, then sees it before the later ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_is_never_skipped_and_never_seen_early() {
    let dbs = TestDatabases::default();
    let store = dbs.store().await;
    let warmup = store
        .append_to_stream("warmup", ExpectedVersion::Any, vec![event(0)])
        .await
        .expect("warmup");
    let mut checkpoint = warmup.position;
    while store.head().await.expect("head") < checkpoint {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // A slow writer: takes a global position, then stays uncommitted.
    let mut slow = store.pool().acquire().await.expect("conn").detach();
    slow.execute("BEGIN").await.expect("begin");
    let late_id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO annals.events (event_id, stream_id, stream_version, event_type, schema_version, payload)
         VALUES ($1, 'late', 1, 't', 1, '{}')",
    )
    .bind(late_id)
    .execute(&mut slow)
    .await
    .expect("slow insert");

    // A fast writer to another stream commits after it, with a larger position, and is not
    // held up by the open transaction.
    let started = Instant::now();
    let fast = store
        .append_to_stream("fast", ExpectedVersion::NoStream, vec![event(1)])
        .await
        .expect("fast append");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "an append to another stream waited"
    );

    // While the slow transaction is open the reader sees neither: showing `fast` now would
    // move the checkpoint past `late`'s position.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let early = store
        .read_all(ReadAll::after(checkpoint))
        .await
        .expect("read");
    assert!(
        early.is_empty(),
        "saw events past an open transaction: {early:?}"
    );

    slow.execute("COMMIT").await.expect("commit");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "events never showed up: {seen:?}"
        );
        let page = store
            .read_all(ReadAll::after(checkpoint))
            .await
            .expect("read");
        if let Some(last) = page.last() {
            checkpoint = last.position;
        }
        seen.extend(page.into_iter().map(|e| e.event_id));
    }
    let fast_id = store
        .read_stream("fast", annals_core::ReadStream::all())
        .await
        .expect("read fast")[0]
        .event_id;
    assert_eq!(
        seen,
        [late_id, fast_id],
        "the late commit was skipped or reordered"
    );
    assert!(fast.position.sequence() > 0);
    dbs.drop_all().await;
}

/// Events of a transaction that rolls back never appear, and do not block the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_append_is_never_seen() {
    let dbs = TestDatabases::default();
    let store = dbs.store().await;
    let mut conn = store.pool().acquire().await.expect("conn").detach();
    conn.execute("BEGIN").await.expect("begin");
    sqlx::query(
        "INSERT INTO annals.events (event_id, stream_id, stream_version, event_type, schema_version, payload)
         VALUES ($1, 'ghost', 1, 't', 1, '{}')",
    )
    .bind(uuid::Uuid::now_v7())
    .execute(&mut conn)
    .await
    .expect("insert");
    let after = store
        .append_to_stream("real", ExpectedVersion::Any, vec![event(1)])
        .await
        .expect("append");
    conn.execute("ROLLBACK").await.expect("rollback");
    let _ = conn.close().await;
    assert!(store
        .wait_for_events(Position::START, Duration::from_secs(10))
        .await
        .expect("wait"));
    let all = store
        .read_all(ReadAll::after(Position::START))
        .await
        .expect("read");
    let streams: Vec<&str> = all.iter().map(|e| e.stream_id.as_str()).collect();
    assert_eq!(streams, ["real"], "a rolled-back event appeared");
    assert_eq!(all[0].position, after.position);
    dbs.drop_all().await;
}

/// A writer holding one stream's lock does not hold up appends to other streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appenders_to_different_streams_do_not_wait_on_each_other() {
    let dbs = TestDatabases::default();
    let store = dbs.store().await;
    store
        .append_to_stream("busy", ExpectedVersion::NoStream, vec![event(0)])
        .await
        .expect("seed");
    let mut holder = store.pool().acquire().await.expect("conn").detach();
    holder.execute("BEGIN").await.expect("begin");
    holder
        .execute("SELECT 1 FROM annals.stream_heads WHERE stream_id = 'busy' FOR UPDATE")
        .await
        .expect("lock busy");

    let started = Instant::now();
    for i in 0..20 {
        store
            .append_to_stream(
                &format!("free-{i}"),
                ExpectedVersion::NoStream,
                vec![event(i)],
            )
            .await
            .expect("append to a free stream");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "free streams waited on the busy one"
    );

    // The same stream does wait, and goes on once the lock is released.
    let blocked = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append_to_stream("busy", ExpectedVersion::Exact(1), vec![event(9)])
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !blocked.is_finished(),
        "an append to a locked stream did not wait"
    );
    holder.execute("ROLLBACK").await.expect("rollback");
    let done = blocked.await.expect("join").expect("append after release");
    assert_eq!(done.version(), 2);
    let _ = holder.close().await;
    dbs.drop_all().await;
}

/// The case that separates (transaction id, position) order from position order: the
/// transaction with the larger id takes the smaller position and commits last. A reader
/// ordered by position alone would checkpoint past it and never see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smaller_position_committed_last_by_a_younger_transaction_is_not_skipped() {
    let dbs = TestDatabases::default();
    let store = dbs.store().await;
    let insert = "INSERT INTO annals.events (event_id, stream_id, stream_version, event_type, schema_version, payload)
                  VALUES ($1, $2, 1, 't', 1, '{}')";
    let mut older = store.pool().acquire().await.expect("conn").detach();
    let mut younger = store.pool().acquire().await.expect("conn").detach();
    older.execute("BEGIN").await.expect("begin");
    older
        .execute("SELECT pg_current_xact_id()")
        .await
        .expect("take an xid");
    younger.execute("BEGIN").await.expect("begin");
    let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    sqlx::query(insert)
        .bind(b)
        .bind("b")
        .execute(&mut younger)
        .await
        .expect("b");
    sqlx::query(insert)
        .bind(a)
        .bind("a")
        .execute(&mut older)
        .await
        .expect("a");
    older.execute("COMMIT").await.expect("commit older");

    // Other tests' transactions can hold the horizon back for a moment: wait for `a`
    // (`b` stays invisible as long as its transaction is open).
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        let first = store
            .read_all(ReadAll::after(Position::START))
            .await
            .expect("read");
        if !first.is_empty() || Instant::now() > deadline {
            break first;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(first.iter().map(|e| e.event_id).collect::<Vec<_>>(), [a]);
    let checkpoint = first[0].position;
    younger.execute("COMMIT").await.expect("commit younger");

    let deadline = Instant::now() + Duration::from_secs(10);
    let rest = loop {
        let rest = store
            .read_all(ReadAll::after(checkpoint))
            .await
            .expect("read");
        if !rest.is_empty() || Instant::now() > deadline {
            break rest;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        rest.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        [b],
        "the late event was skipped"
    );
    assert!(
        rest[0].global_position() < first[0].global_position(),
        "the setup did not invert positions"
    );
    let _ = older.close().await;
    let _ = younger.close().await;
    dbs.drop_all().await;
}
