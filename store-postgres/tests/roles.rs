//! The append-only log, enforced by the database: an application role set up by
//! `grant_app_role` passes the whole conformance suite, and cannot update, delete,
//! truncate, backdate or reorder events, nor change the schema.

use std::sync::{Arc, Mutex};

use annals_core::{testkit::conformance, EventStore, ExpectedVersion, NewEvent, Position, ReadAll};
use annals_store_postgres::{
    testkit::{TestAppRole, TestDatabase},
    PgEventStore,
};
use sqlx::{Connection, Executor, PgConnection};

fn event(n: u64) -> NewEvent {
    NewEvent::new(
        "t",
        1,
        annals_core::Encoding::Json,
        format!(r#"{{"n":{n}}}"#).into_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_application_role_passes_the_conformance_suite() {
    let role = Arc::new(TestAppRole::new().await);
    let databases: Arc<Mutex<Vec<TestDatabase>>> = Arc::default();
    conformance::run(|| {
        let (role, databases) = (role.clone(), databases.clone());
        async move {
            let db = TestDatabase::new().await;
            let store = role.store(&db).await;
            databases.lock().expect("lock").push(db);
            store
        }
    })
    .await;
    let databases = std::mem::take(&mut *databases.lock().expect("lock"));
    for db in databases {
        db.drop_database().await;
    }
    Arc::into_inner(role)
        .expect("no store holds the role")
        .drop_roles()
        .await;
}

/// Runs `sql` as the application role on a connection of its own and returns the
/// SQLSTATE it failed with (panics if it succeeded).
async fn refused(conn: &mut PgConnection, sql: &str) -> String {
    match conn.execute(sql).await {
        Ok(_) => panic!("the application role was allowed: {sql}"),
        Err(e) => e
            .as_database_error()
            .and_then(|d| d.code().map(|c| c.into_owned()))
            .unwrap_or_else(|| panic!("{sql}: not a database error: {e}")),
    }
}

/// The log once it holds `events` events (a transaction of a concurrent test elsewhere on
/// the server holds the horizon back for a moment).
async fn log(store: &PgEventStore, events: usize) -> Vec<(u64, String, u64, String)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut read = Vec::new();
    while read.len() < events && std::time::Instant::now() < deadline {
        read = store
            .read_all(ReadAll::after(Position::START))
            .await
            .expect("read");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    read.into_iter()
        .map(|e| {
            (
                e.position.sequence(),
                e.stream_id,
                e.stream_version,
                e.recorded_at.to_rfc3339(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_application_role_cannot_rewrite_the_log() {
    let db = TestDatabase::new().await;
    let role = TestAppRole::new().await;
    let app = role.store(&db).await;
    for stream in ["a", "b"] {
        app.append_to_stream(stream, ExpectedVersion::NoStream, vec![event(1), event(2)])
            .await
            .expect("the application role appends");
    }
    let before = log(&app, 4).await;
    assert_eq!(before.len(), 4);

    let mut conn = PgConnection::connect(&role.url(&db))
        .await
        .expect("connect");
    conn.execute("SET search_path TO annals")
        .await
        .expect("path");
    let denied = "42501";
    let attempts = [
        "UPDATE events SET payload = '{\"n\":999}' WHERE stream_id = 'a'",
        "UPDATE events SET recorded_at = now() - interval '1 year'",
        "DELETE FROM events WHERE stream_id = 'b'",
        "TRUNCATE events",
        // Forged columns: a place in the log, a commit, a time.
        "INSERT INTO events (global_position, event_id, stream_id, stream_version, event_type, schema_version, payload)
         OVERRIDING SYSTEM VALUE VALUES (1000000, gen_random_uuid(), 'a', 3, 't', 1, '{}')",
        "INSERT INTO events (transaction_id, event_id, stream_id, stream_version, event_type, schema_version, payload)
         VALUES ('1'::xid8, gen_random_uuid(), 'a', 3, 't', 1, '{}')",
        "INSERT INTO events (recorded_at, event_id, stream_id, stream_version, event_type, schema_version, payload)
         VALUES ('2000-01-01', gen_random_uuid(), 'a', 3, 't', 1, '{}')",
        "DELETE FROM stream_heads",
        "TRUNCATE stream_heads",
        // The schema stays the owner's.
        "ALTER TABLE events DISABLE TRIGGER ALL",
        "DROP TABLE events",
        "CREATE TABLE annals.shadow_events (x int)",
        "CREATE FUNCTION annals.append_streams() RETURNS void LANGUAGE sql AS 'SELECT'",
        "DELETE FROM _sqlx_migrations",
    ];
    for sql in attempts {
        // Each in its own transaction, rolled back: a refused statement aborts it.
        conn.execute("BEGIN").await.expect("begin");
        let code = refused(&mut conn, sql).await;
        conn.execute("ROLLBACK").await.expect("rollback");
        assert_eq!(code, denied, "{sql}: expected permission denied");
    }
    // Granting onward what it does not have grants nothing (PostgreSQL only warns).
    conn.execute("GRANT UPDATE, DELETE ON events TO PUBLIC")
        .await
        .expect("a warning, not an error");
    assert_eq!(
        refused(&mut conn, "DELETE FROM events").await,
        denied,
        "a GRANT by the application role opened DELETE"
    );
    // Nothing changed, and the application role still appends after all that.
    assert_eq!(log(&app, 4).await, before);
    app.append_to_stream("a", ExpectedVersion::Exact(2), vec![event(3)])
        .await
        .expect("append after the refusals");

    // Idempotent: granting again changes nothing and breaks nothing.
    db.store()
        .grant_app_role(role.group())
        .await
        .expect("grant again");
    assert_eq!(
        refused(&mut conn, "DELETE FROM events").await,
        denied,
        "granting again opened DELETE"
    );
    app.append_to_stream("b", ExpectedVersion::Exact(2), vec![event(3)])
        .await
        .expect("append after granting again");

    conn.close().await.expect("close");
    drop(app);
    db.drop_database().await;
    role.drop_roles().await;
}

/// Every table the migrations create is readable by the application role, so a new table
/// without a decision about its privileges fails here.
#[tokio::test]
async fn every_table_has_a_decision() {
    let db = TestDatabase::new().await;
    let role = TestAppRole::new().await;
    role.grant(&db).await;
    let missing: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'annals' AND c.relkind IN ('r', 'p')
           AND NOT has_table_privilege($1, c.oid, 'SELECT')",
    )
    .bind(role.group())
    .fetch_all(db.store().pool())
    .await
    .expect("pg_tables");
    assert!(
        missing.is_empty(),
        "tables grant_app_role does not know (add them to roles.rs): {missing:?}"
    );
    let writable_events: bool = sqlx::query_scalar(
        "SELECT has_table_privilege($1, 'annals.events', 'UPDATE')
             OR has_table_privilege($1, 'annals.events', 'DELETE')
             OR has_table_privilege($1, 'annals.events', 'TRUNCATE')
             OR has_column_privilege($1, 'annals.events', 'transaction_id', 'INSERT')
             OR has_column_privilege($1, 'annals.events', 'recorded_at', 'INSERT')
             OR has_column_privilege($1, 'annals.events', 'global_position', 'INSERT')",
    )
    .bind(role.group())
    .fetch_one(db.store().pool())
    .await
    .expect("privileges");
    assert!(!writable_events);
    db.drop_database().await;
    role.drop_roles().await;
}

#[tokio::test]
async fn grant_app_role_checks_the_name_and_says_who_may_run_it() {
    let db = TestDatabase::new().await;
    for bad in ["Robert'); DROP TABLE events;--", "pg_monitor", ""] {
        let e = db.store().grant_app_role(bad).await.expect_err(bad);
        assert!(
            matches!(e, annals_core::Error::InvalidInput(_)),
            "{bad:?}: {e:?}"
        );
    }
    // The application role itself may not grant (it does not own the schema).
    let role = TestAppRole::new().await;
    let app = role.store(&db).await;
    let e = app
        .grant_app_role(role.group())
        .await
        .expect_err("the application role granted itself");
    assert!(
        e.to_string().contains("owner"),
        "the error does not say who may grant: {e}"
    );
    drop(app);
    db.drop_database().await;
    role.drop_roles().await;
}
