//! Upgrading a database the previous release created: `migrate` brings it to the
//! stream-order fix with its data intact, and a binary of the previous release still
//! running is refused loudly instead of appending without the stream locks (which would
//! reorder the log again).

mod common;

use std::borrow::Cow;

use annals_core::{EventStore, ExpectedVersion, Position, ReadAll, ReadStream};
use annals_store_postgres::PgEventStore;
use common::{event, TestDatabases};
use sqlx::{
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
    Connection, Executor, PgConnection,
};

/// The previous release's one-event append to an existing stream, as it ran.
const PREVIOUS_APPEND_EXISTING_ONE: &str = "
WITH stream AS (
    UPDATE annals.streams SET version = version + 1
    WHERE stream_id = $1
      AND CASE WHEN $2 = -1 THEN true WHEN $2 = -3 THEN version > 0 ELSE version = $2 END
    RETURNING version
)
INSERT INTO annals.events (event_id, stream_id, stream_version, event_type, schema_version,
                           metadata, payload, payload_bin)
SELECT $3, $1, s.version, 't', 1, NULL, '{}'::jsonb, NULL
FROM stream s
RETURNING stream_version";

/// The previous release's one-event append creating a stream.
const PREVIOUS_APPEND_NEW_ONE: &str = "
WITH stream AS (
    INSERT INTO annals.streams (stream_id, version) VALUES ($1, 1)
    ON CONFLICT (stream_id) DO NOTHING
    RETURNING version
)
INSERT INTO annals.events (event_id, stream_id, stream_version, event_type, schema_version,
                           metadata, payload, payload_bin)
SELECT $2, $1, s.version, 't', 1, NULL, '{}'::jsonb, NULL
FROM stream s
RETURNING stream_version";

/// The previous release's general append (several streams).
const PREVIOUS_APPEND_EVENTS: &str = "
SELECT versions FROM annals.append_events(
    ARRAY['x', 'y'], ARRAY[-1, -1]::bigint[], ARRAY[1, 2], ARRAY[gen_random_uuid(), gen_random_uuid()],
    ARRAY['t', 't'], ARRAY[1, 1], ARRAY['', ''], ARRAY[true, true],
    ARRAY[convert_to('{}', 'UTF8'), convert_to('{}', 'UTF8')], false)";

/// The migrations the previous release shipped: 0001-0004.
fn previous_release_migrations() -> Migrator {
    let all = sqlx::migrate!("./migrations");
    Migrator {
        migrations: Cow::Owned(all.iter().filter(|m| m.version <= 4).cloned().collect()),
        ..Migrator::DEFAULT
    }
}

/// A connection in a fresh database with the schema as the previous release left it
/// (migrations 0001-0004) and some events its statements appended.
async fn previous_release_database(dbs: &TestDatabases) -> PgConnectOptions {
    let options = dbs.create().await;
    let mut conn = PgConnection::connect_with(&options).await.expect("connect");
    conn.execute("CREATE SCHEMA annals; SET search_path TO annals")
        .await
        .expect("schema");
    previous_release_migrations()
        .run_direct(&mut conn)
        .await
        .expect("the previous release's migrations");
    conn.execute("RESET search_path").await.expect("reset");
    for (stream, versions) in [("a", 3), ("b", 1)] {
        sqlx::query(PREVIOUS_APPEND_NEW_ONE)
            .bind(stream)
            .bind(uuid::Uuid::now_v7())
            .execute(&mut conn)
            .await
            .expect("previous release creates a stream");
        for v in 1..versions {
            sqlx::query(PREVIOUS_APPEND_EXISTING_ONE)
                .bind(stream)
                .bind(i64::from(v))
                .bind(uuid::Uuid::now_v7())
                .execute(&mut conn)
                .await
                .expect("previous release appends");
        }
    }
    conn.execute(PREVIOUS_APPEND_EVENTS)
        .await
        .expect("previous release's multi-stream append");
    conn.close().await.expect("close");
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_upgrades_the_previous_release_s_database_in_place() {
    let dbs = TestDatabases::default();
    let options = previous_release_database(&dbs).await;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .expect("pool");
    let store = PgEventStore::new(pool);
    store.migrate().await.expect("migrate to this release");

    // The data is intact and every stream carries its last writer.
    assert_eq!(store.stream_version("a").await.expect("a"), 3);
    assert_eq!(store.stream_version("x").await.expect("x"), 1);
    let unset: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM annals.stream_heads h
         WHERE h.last_xid <> (SELECT transaction_id FROM annals.events e
                              WHERE e.stream_id = h.stream_id AND e.stream_version = h.version)",
    )
    .fetch_one(store.pool())
    .await
    .expect("last writers");
    assert_eq!(unset, 0, "last_xid not backfilled from the stored events");

    // This release appends on top of it, versions continuing.
    let done = store
        .append_to_stream("a", ExpectedVersion::Exact(3), vec![event(4)])
        .await
        .expect("append after the upgrade");
    assert_eq!(done.version(), 4);
    let versions: Vec<u64> = store
        .read_stream("a", ReadStream::all())
        .await
        .expect("read")
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    // Another test's open transaction can hold the log's horizon back for a while.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.head().await.expect("head") < done.position {
        assert!(
            std::time::Instant::now() < deadline,
            "the append never became visible"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let log = store
        .read_all(ReadAll::after(Position::START))
        .await
        .expect("log");
    assert_eq!(log.len(), 3 + 1 + 2 + 1);
    store.migrate().await.expect("migrate again is a no-op");
    dbs.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_release_s_appends_are_refused_loudly_after_migrate() {
    let dbs = TestDatabases::default();
    let options = previous_release_database(&dbs).await;
    let store = PgEventStore::new(
        PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await
            .expect("pool"),
    );
    store.migrate().await.expect("migrate");
    let head = store.head().await.expect("head");

    // A binary of the previous release, still running, tries each of its append paths.
    let mut old = PgConnection::connect_with(&options)
        .await
        .expect("old binary");
    let existing = sqlx::query(PREVIOUS_APPEND_EXISTING_ONE)
        .bind("a")
        .bind(-1_i64)
        .bind(uuid::Uuid::now_v7())
        .execute(&mut old)
        .await;
    let new = sqlx::query(PREVIOUS_APPEND_NEW_ONE)
        .bind("brand-new")
        .bind(uuid::Uuid::now_v7())
        .execute(&mut old)
        .await;
    let multi = old.execute(PREVIOUS_APPEND_EVENTS).await;
    for (what, result, names) in [
        (
            "append to an existing stream",
            existing.map(drop),
            "streams",
        ),
        ("append creating a stream", new.map(drop), "streams"),
        ("multi-stream append", multi.map(drop), "append_events"),
    ] {
        let error = result.expect_err(what).to_string();
        assert!(
            error.contains(names) && error.contains("does not exist"),
            "{what}: expected a loud refusal naming `{names}`, got: {error}"
        );
    }
    // Its migrate refuses too: it does not know migration 5.
    let previous = previous_release_migrations();
    old.execute("SET search_path TO annals")
        .await
        .expect("path");
    let migrated = previous.run_direct(&mut old).await;
    assert!(
        migrated.is_err(),
        "the previous release's migrate accepted a newer schema"
    );
    old.close().await.expect("close");
    assert_eq!(
        store.head().await.expect("head"),
        head,
        "an old append wrote"
    );
    dbs.drop_all().await;
}
