//! Faults: a connection killed in the middle of an append (the store runs it again, and it
//! is written once), connections dropped under the pool, and a server that cannot be
//! reached at start.

mod common;

use std::time::{Duration, Instant};

use annals_core::{Error, EventStore, ExpectedVersion, ReadStream, SnapshotStore, StreamAppend};
use annals_store_postgres::{PgEventStore, PgStoreOptions};
use common::{event, kill_sessions, TestDatabases};
use sqlx::{Connection, Executor, Row};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_connection_is_killed_runs_again_and_is_written_once() {
    for shape in [Shape::OneEvent, Shape::OneStream, Shape::TwoStreams] {
        kill_mid_append(shape).await;
    }
}

/// Which append path the killed append takes.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// One event: the scalar single-statement path.
    OneEvent,
    /// Several events to one stream: the array single-statement path.
    OneStream,
    /// Two streams: the append_events function.
    TwoStreams,
}

async fn kill_mid_append(shape: Shape) {
    let dbs = TestDatabases::default();
    let store = dbs.store().await;

    // An open transaction holds event id X, so an append whose last event has id X writes
    // its stream row and the events before it, then waits on X's unique index entry.
    let blocking_id = uuid::Uuid::now_v7();
    let mut blocker = store.pool().acquire().await.expect("conn").detach();
    blocker.execute("BEGIN").await.expect("begin");
    sqlx::query(
        "INSERT INTO annals.events (event_id, stream_id, stream_version, event_type, schema_version, payload)
         VALUES ($1, 'blocker', 1, 't', 1, '{}')",
    )
    .bind(blocking_id)
    .execute(&mut blocker)
    .await
    .expect("blocking insert");

    let mut third = event(3);
    third.event_id = blocking_id;
    let append = {
        let store = store.clone();
        tokio::spawn(async move {
            let events = if shape == Shape::OneEvent {
                vec![third]
            } else {
                vec![event(1), event(2), third]
            };
            let mut appends = vec![StreamAppend::new(
                "victim",
                ExpectedVersion::NoStream,
                events,
            )];
            if shape == Shape::TwoStreams {
                appends.push(StreamAppend::new(
                    "victim-2",
                    ExpectedVersion::Any,
                    vec![event(4)],
                ));
            }
            store.append(appends).await
        })
    };

    // Find the append's backend while it waits, mid-statement, and kill it. (From another
    // connection: inside a transaction, pg_stat_activity is a snapshot taken once.)
    let mut admin = sqlx::PgConnection::connect_with(&store.pool().connect_options())
        .await
        .expect("admin");
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid: i32 = loop {
        let row = sqlx::query(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'
               AND query NOT LIKE '%pg_stat_activity%'",
        )
        .fetch_optional(&mut admin)
        .await
        .expect("pg_stat_activity");
        if let Some(row) = row {
            break row.get("pid");
        }
        assert!(
            Instant::now() < deadline,
            "the append never started waiting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut admin)
        .await
        .expect("terminate");

    // Appends are idempotent by event id, so the store runs the append again on another
    // connection: it waits on the held id as the first attempt did, until the blocker
    // rolls back.
    blocker.execute("ROLLBACK").await.expect("rollback");
    let _ = blocker.close().await;
    let _ = admin.close().await;
    let done = append
        .await
        .expect("join")
        .expect("the append, run again after its connection was killed");

    // Written once, where the answer says: nothing of the killed attempt is left.
    let written = if shape == Shape::OneEvent { 1 } else { 3 };
    assert_eq!(done.streams[0].version, written);
    assert_eq!(
        store.stream_version("victim").await.expect("version"),
        written
    );
    let stored = store
        .read_stream("victim", ReadStream::all())
        .await
        .expect("read");
    assert_eq!(
        stored.len() as u64,
        written,
        "the killed attempt left events"
    );
    if shape == Shape::TwoStreams {
        assert_eq!(store.stream_version("victim-2").await.expect("version"), 1);
    }

    // The pool replaced the dead connection: the next append works.
    let next = store
        .append_to_stream(
            "victim",
            ExpectedVersion::Exact(written),
            vec![event(1), event(2)],
        )
        .await
        .expect("append after the kill");
    assert_eq!(next.version(), written + 2);
    dbs.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_recovers_when_every_connection_is_killed() {
    let dbs = TestDatabases::default();
    let store = dbs.store().await;
    for i in 0..4 {
        store
            .append_to_stream(&format!("s-{i}"), ExpectedVersion::Any, vec![event(i)])
            .await
            .expect("warm the pool");
    }
    let mut admin = sqlx::PgConnection::connect(&common::database_url())
        .await
        .expect("admin");
    let killed = kill_sessions(&mut admin, &store).await;
    assert!(killed > 0, "no connection was killed");
    let done = store
        .append_to_stream("after", ExpectedVersion::NoStream, vec![event(9)])
        .await
        .expect("append after every connection died");
    assert_eq!(done.version(), 1);
    dbs.drop_all().await;
}

/// A store from `connect` does not ping connections before use: when every idle
/// connection has died (a server restart), reads and appends run again on fresh ones
/// instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ping_dead_idle_connections_are_replaced_on_use() {
    let dbs = TestDatabases::default();
    let store = dbs.connected_store(PgStoreOptions::new()).await;
    // Several connections in the pool, all idle.
    let warm: Vec<_> = (0..6u64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append_to_stream(&format!("w-{i}"), ExpectedVersion::Any, vec![event(i)])
                    .await
            })
        })
        .collect();
    for task in warm {
        task.await.expect("join").expect("warm the pool");
    }
    assert!(store.pool().num_idle() > 1, "the pool holds one connection");
    let mut admin = sqlx::PgConnection::connect(&common::database_url())
        .await
        .expect("admin");
    let killed = kill_sessions(&mut admin, &store).await;
    assert!(killed > 1, "fewer than two connections were killed");
    let _ = admin.close().await;
    // A load (the repository's read) first, then a plain read, then an append: each meets
    // dead connections and runs again.
    let (_, events) = store
        .load_stream("w-1", "t", 1)
        .await
        .expect("a load after the kill");
    assert_eq!(events.len(), 1);
    assert_eq!(
        store
            .stream_version("w-1")
            .await
            .expect("a read after the kill"),
        1
    );
    let done = store
        .append_to_stream("after", ExpectedVersion::NoStream, vec![event(9)])
        .await
        .expect("an append after the kill");
    assert_eq!(done.version(), 1);
    dbs.drop_all().await;
}

#[tokio::test]
async fn an_unreachable_server_names_the_host_and_never_the_password() {
    let started = Instant::now();
    let err = PgEventStore::connect("postgres://annals:s3cret-pw@127.0.0.1:1/ledger")
        .await
        .expect_err("nothing listens on port 1");
    let message = err.to_string();
    let chain = format!("{message} / {:?}", std::error::Error::source(&err));
    assert!(matches!(err, Error::Backend(_)), "{err:?}");
    assert!(
        message.contains("127.0.0.1:1/ledger"),
        "does not name the target: {message}"
    );
    assert!(!chain.contains("s3cret-pw"), "leaks the password: {chain}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took too long to give up"
    );

    let err = PgEventStore::connect("mysql://annals:s3cret-pw@127.0.0.1/ledger")
        .await
        .expect_err("not a postgres URL");
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(
        !err.to_string().contains("s3cret-pw"),
        "leaks the password: {err}"
    );
}
