//! Each stream's events reach the global log in version order, whatever the interleaving of
//! appenders: the two interleavings that used to reorder a stream (a transaction id taken
//! before the append owned its stream), made deterministic, and a torture run with every
//! kind of append.

mod common;

use std::time::{Duration, Instant};

use annals_core::{
    testkit::conformance, EventStore, ExpectedVersion, Position, ReadAll, RecordedEvent,
    StreamAppend,
};
use annals_store_postgres::PgEventStore;
use common::{event, TestDatabases};
use sqlx::{postgres::PgPoolOptions, Connection, Executor, PgConnection};

/// The table of stream versions (named `streams` before migration 0005), so these tests also
/// run, and fail, against the code before the fix.
async fn heads_table(store: &PgEventStore) -> String {
    let renamed: bool = sqlx::query_scalar("SELECT to_regclass('annals.stream_heads') IS NOT NULL")
        .fetch_one(store.pool())
        .await
        .expect("to_regclass");
    if renamed {
        "annals.stream_heads".to_owned()
    } else {
        "annals.streams".to_owned()
    }
}

/// Reads the whole log once it reaches `until` (other tests' transactions can hold the
/// horizon back for a moment).
async fn log_until(store: &PgEventStore, until: Position) -> Vec<RecordedEvent> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.head().await.expect("head") < until {
        assert!(Instant::now() < deadline, "the log never reached {until}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store
        .read_all(ReadAll::after(Position::START).limit(10_000))
        .await
        .expect("read_all")
}

/// The versions of `stream` in log order.
fn versions_in_log(log: &[RecordedEvent], stream: &str) -> Vec<u64> {
    log.iter()
        .filter(|e| e.stream_id == stream)
        .map(|e| e.stream_version)
        .collect()
}

/// Waits until some other session of this database waits on a lock (the blocked append).
async fn until_someone_waits(store: &PgEventStore) {
    let mut admin = PgConnection::connect_with(&store.pool().connect_options())
        .await
        .expect("admin");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut admin)
        .await
        .expect("pg_stat_activity");
        if waiting > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "nobody ever waited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = admin.close().await;
}

/// A multi-stream append `[a, b]` blocked on `a` while another writer appends to `b`: before
/// the fix it had already taken its transaction id, so `b`'s next version, written after
/// the other writer's, sorted before it in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_multi_stream_append_blocked_on_one_stream_keeps_the_other_in_order() {
    let dbs = TestDatabases::default();
    let store = dbs.store().await;
    for s in ["a", "b"] {
        store
            .append_to_stream(s, ExpectedVersion::NoStream, vec![event(0)])
            .await
            .expect("seed");
    }
    // Someone holds a's row (a slow transaction elsewhere).
    let table = heads_table(&store).await;
    let mut holder = PgConnection::connect_with(&store.pool().connect_options())
        .await
        .expect("holder");
    holder.execute("BEGIN").await.expect("begin");
    sqlx::query(&format!(
        "SELECT 1 FROM {table} WHERE stream_id = 'a' FOR UPDATE"
    ))
    .execute(&mut holder)
    .await
    .expect("lock a");

    let multi = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append(vec![
                    StreamAppend::new("a", ExpectedVersion::Any, vec![event(1)]),
                    StreamAppend::new("b", ExpectedVersion::Any, vec![event(1)]),
                ])
                .await
        })
    };
    until_someone_waits(&store).await;
    // Another writer appends to b meanwhile. It may wait for the multi-stream append (that
    // is the fix) or not (before it): either way it must not overtake it in the log.
    let single = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append_to_stream("b", ExpectedVersion::Any, vec![event(2)])
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    holder.execute("COMMIT").await.expect("release a");
    let multi = multi.await.expect("join").expect("multi-stream append");
    let single = single.await.expect("join").expect("single append");
    let _ = holder.close().await;

    let log = log_until(&store, multi.position.max(single.position)).await;
    assert_eq!(
        versions_in_log(&log, "b"),
        [1, 2, 3],
        "stream b is out of version order in the global log"
    );
    assert_eq!(versions_in_log(&log, "a"), [1, 2]);
    dbs.drop_all().await;
}

/// Two single-stream `Any` appends racing on one stream, the first of which took its
/// transaction id before it owned the stream: Postgres assigns the id at the first write,
/// and an UPDATE takes it before waiting for the row another writer holds, so the first
/// writer could be overtaken by a younger one and list the stream's later version first.
///
/// To make that moment last, the first writer runs as a role under a row-level security
/// policy whose check, evaluated while the UPDATE scans for the stream's row (before any
/// row lock), takes a transaction id and sleeps. The second writer (not under the policy)
/// appends meanwhile. Before the fix the first writer's event, the later version, sorted
/// first in the log; with the stream's advisory lock taken before the scan, the second
/// writer waits instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_that_took_its_transaction_id_early_stays_in_stream_order() {
    let dbs = TestDatabases::default();
    let store = dbs.store().await;
    store
        .append_to_stream("s", ExpectedVersion::NoStream, vec![event(0)])
        .await
        .expect("seed");
    let table = heads_table(&store).await;
    let role = format!("annals_slow_{}", uuid::Uuid::now_v7().simple());
    for ddl in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT USAGE ON SCHEMA annals TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA annals TO {role}"),
        format!("GRANT USAGE ON ALL SEQUENCES IN SCHEMA annals TO {role}"),
        "CREATE FUNCTION public.slow_scan() RETURNS boolean LANGUAGE plpgsql AS $$
         BEGIN
             PERFORM pg_current_xact_id();
             PERFORM pg_sleep(0.6);
             RETURN true;
         END $$"
            .to_owned(),
        format!("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"),
        format!("CREATE POLICY everyone ON {table} USING (true) WITH CHECK (true)"),
        format!(
            "CREATE POLICY slow ON {table} AS RESTRICTIVE FOR UPDATE TO {role}
             USING (public.slow_scan())"
        ),
    ] {
        store
            .pool()
            .execute(ddl.as_str())
            .await
            .expect("test setup");
    }
    let slow_options = store
        .pool()
        .connect_options()
        .as_ref()
        .clone()
        .username(&role);
    let slow_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(slow_options)
        .await
        .expect("slow writer's pool");
    let slow = PgEventStore::new(slow_pool.clone());

    let started = Instant::now();
    let first = tokio::spawn(async move {
        slow.append_to_stream("s", ExpectedVersion::Any, vec![event(1)])
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = store
        .append_to_stream("s", ExpectedVersion::Any, vec![event(2)])
        .await
        .expect("second append");
    let first = first.await.expect("join").expect("first append");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "the policy did not slow the first writer down: the test tested nothing"
    );

    let log = log_until(&store, first.position.max(second.position)).await;
    assert_eq!(
        versions_in_log(&log, "s"),
        [1, 2, 3],
        "stream s is out of version order in the global log"
    );
    slow_pool.close().await;
    dbs.drop_all().await;
    let mut admin = PgConnection::connect(&common::database_url())
        .await
        .expect("admin");
    admin
        .execute(format!("DROP ROLE {role}").as_str())
        .await
        .expect("drop role");
}

/// Sixteen writers, mostly `Any` and a share of multi-stream appends, on few streams, with
/// a tailing reader: no event missing, duplicated, or out of stream order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_of_every_append_kind_keep_every_stream_in_order() {
    let dbs = TestDatabases::default();
    let store = dbs.store().await;
    let report = conformance::concurrent_appends_with_tailing_reader(store, 16, 120).await;
    assert!(report.any > 100 && report.multi_stream > 50, "{report:?}");
    println!("{report:?}");
    dbs.drop_all().await;
}

/// The load for folding has no ORDER BY (it relies on rows coming in insertion order): when
/// the table's physical order is not version order (a row rewritten in place, read by a
/// sequential scan), the loader still returns the events in version order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_to_fold_returns_version_order_whatever_the_physical_order() {
    use annals_core::SnapshotStore;
    let dbs = TestDatabases::default();
    let setup = dbs.store().await;
    setup
        .append_to_stream(
            "shuffled",
            ExpectedVersion::NoStream,
            vec![event(1), event(2), event(3)],
        )
        .await
        .expect("append");
    // Version 1's row moves to the end of the heap; new sessions scan the table in heap
    // order.
    setup
        .pool()
        .execute(
            "UPDATE annals.events SET schema_version = schema_version
             WHERE stream_id = 'shuffled' AND stream_version = 1",
        )
        .await
        .expect("rewrite a row");
    let database = setup
        .pool()
        .connect_options()
        .get_database()
        .expect("database name")
        .to_owned();
    setup
        .pool()
        .execute(
            format!(
                "ALTER DATABASE {database} SET enable_indexscan = off;
                 ALTER DATABASE {database} SET enable_bitmapscan = off"
            )
            .as_str(),
        )
        .await
        .expect("force sequential scans");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(setup.pool().connect_options().as_ref().clone())
        .await
        .expect("a fresh session");
    let store = PgEventStore::new(pool);
    let physical: Vec<i64> =
        sqlx::query_scalar("SELECT stream_version FROM annals.events WHERE stream_id = 'shuffled'")
            .fetch_all(store.pool())
            .await
            .expect("heap order");
    assert_eq!(physical, [2, 3, 1], "the heap order is not shuffled");
    let (_, events) = store
        .load_stream_to_fold("shuffled", "t", 1)
        .await
        .expect("load");
    let versions: Vec<u64> = events.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, [1, 2, 3]);
    dbs.drop_all().await;
}
