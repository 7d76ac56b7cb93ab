//! Migrations: idempotent, safe when run concurrently, in a configurable and validated
//! schema; schemas are isolated from each other.

mod common;

use annals_core::{Error, EventStore, ExpectedVersion, Position, ReadAll, ReadStream};
use annals_store_postgres::{PgEventStore, PgStoreOptions};
use common::{event, TestDatabases};
use sqlx::{postgres::PgPoolOptions, Connection};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_and_safe_to_run_concurrently() {
    let dbs = TestDatabases::default();
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect_with(dbs.create().await)
        .await
        .expect("pool");
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let store = PgEventStore::new(pool.clone());
            tokio::spawn(async move { store.migrate().await })
        })
        .collect();
    for task in tasks {
        task.await.expect("join").expect("concurrent migrate");
    }
    let store = PgEventStore::new(pool.clone());
    store.migrate().await.expect("migrate again");
    store
        .append_to_stream("s", ExpectedVersion::NoStream, vec![event(0)])
        .await
        .expect("append after migrating");
    store.migrate().await.expect("migrate with data");
    assert_eq!(store.stream_version("s").await.expect("version"), 1);
    pool.close().await;
    dbs.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_are_configurable_and_isolated() {
    let dbs = TestDatabases::default();
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect_with(dbs.create().await)
        .await
        .expect("pool");
    let a = PgEventStore::with_options(pool.clone(), PgStoreOptions::new().schema("tenant_a"))
        .expect("schema a");
    let b = PgEventStore::with_options(pool.clone(), PgStoreOptions::new().schema("tenant_b"))
        .expect("schema b");
    a.migrate().await.expect("migrate a");
    b.migrate().await.expect("migrate b");
    assert_eq!(a.schema(), "tenant_a");
    a.append_to_stream("s", ExpectedVersion::NoStream, vec![event(0)])
        .await
        .expect("append a");
    b.append_to_stream("s", ExpectedVersion::NoStream, vec![event(0), event(0)])
        .await
        .expect("append b: same stream name, other schema");
    assert_eq!(
        a.read_stream("s", ReadStream::all())
            .await
            .expect("read a")
            .len(),
        1
    );
    assert_eq!(
        b.read_stream("s", ReadStream::all())
            .await
            .expect("read b")
            .len(),
        2
    );
    assert!(b
        .wait_for_events(Position::START, std::time::Duration::from_secs(10))
        .await
        .expect("wait"));
    assert_eq!(
        b.read_all(ReadAll::after(Position::START))
            .await
            .expect("log b")
            .len(),
        2
    );
    pool.close().await;
    dbs.drop_all().await;
}

#[tokio::test]
async fn invalid_schema_names_are_refused_before_any_sql() {
    let pool = PgPoolOptions::new()
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .expect("lazy pool");
    for bad in [
        "",
        "Tenant",
        "a-b",
        "x\"; DROP TABLE events; --",
        "pg_catalog",
        "1abc",
        &"a".repeat(41),
    ] {
        let result = PgEventStore::with_options(pool.clone(), PgStoreOptions::new().schema(bad));
        assert!(
            matches!(result, Err(Error::InvalidInput(_))),
            "{bad:?} was accepted"
        );
    }
    for good in ["annals", "_x", "tenant_42"] {
        assert!(
            PgEventStore::with_options(pool.clone(), PgStoreOptions::new().schema(good)).is_ok()
        );
    }
}

/// Appends rely on READ COMMITTED; `connect` pins it even when the database's default is
/// stricter, so concurrent appends conflict cleanly instead of failing to serialize.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_pins_read_committed_whatever_the_database_default() {
    let dbs = TestDatabases::default();
    let options = dbs.create().await;
    let name = options.get_database().expect("database").to_owned();
    let mut admin = sqlx::PgConnection::connect(&common::database_url())
        .await
        .expect("admin");
    sqlx::Executor::execute(
        &mut admin,
        format!("ALTER DATABASE {name} SET default_transaction_isolation = 'serializable'")
            .as_str(),
    )
    .await
    .expect("alter");
    let base = common::database_url();
    let (server, _) = base.rsplit_once('/').expect("URL with a database");
    let store = PgEventStore::connect(&format!("{server}/{name}"))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let level: String = sqlx::query_scalar("SHOW transaction_isolation")
        .fetch_one(store.pool())
        .await
        .expect("show");
    assert_eq!(level, "read committed");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append_to_stream("hot", ExpectedVersion::Any, vec![event(0)])
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await
            .expect("join")
            .expect("concurrent Any appends all succeed");
    }
    assert_eq!(store.stream_version("hot").await.expect("version"), 8);
    store.pool().close().await;
    dbs.drop_all().await;
}

/// Events restored from another cluster carry transaction ids this cluster has not reached;
/// tailing reads would then sort new events before old checkpoints. migrate() refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_refuses_transaction_ids_from_another_cluster() {
    let dbs = TestDatabases::default();
    let store = dbs.store().await;
    sqlx::query(
        "INSERT INTO annals.events (transaction_id, event_id, stream_id, stream_version, event_type, schema_version, payload)
         VALUES ('4000000000000000'::xid8, $1, 'restored', 1, 't', 1, '{}')",
    )
    .bind(uuid::Uuid::now_v7())
    .execute(store.pool())
    .await
    .expect("insert a restored row");
    let err = store.migrate().await.expect_err("must refuse");
    assert!(err.to_string().contains("another cluster"), "{err}");
    dbs.drop_all().await;
}
