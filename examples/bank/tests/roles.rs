//! End to end under least privilege: the owner runs `bank migrate --app-role`, and the
//! whole bank (appends, the outbox, the projection, the relay to NATS, status) runs as a
//! login role in that application role, which cannot rewrite the log. What needs the owner
//! (a shadow rebuild's DDL) fails with the database's reason.

mod common;

use std::process::Command;

use annals_nats::testkit::{assert_exactly_once_in_order, bus, NatsServer};
use annals_store_postgres::testkit::{TestAppRole, TestDatabase};
use common::relayed_event_ids;
use sqlx::{Connection, Executor, PgConnection};

const BANK: &str = env!("CARGO_BIN_EXE_bank");

fn bank(url: &str, nats: &NatsServer, args: &[&str]) -> std::process::Output {
    Command::new(BANK)
        .args(["--database-url", url, "--nats-url", &nats.url()])
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run bank")
}

#[track_caller]
fn succeeded(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bank_runs_as_an_application_role_that_cannot_rewrite_the_log() {
    let nats = NatsServer::start().await;
    let db = TestDatabase::new().await;
    let role = TestAppRole::new().await;

    // The owner migrates and sets up the application role through the CLI.
    let out = bank(&db.url(), &nats, &["migrate", "--app-role", role.group()]);
    let said = succeeded(&out, "bank migrate --app-role");
    assert!(
        said.contains(&format!("granted {}", role.group())),
        "{said}"
    );
    let mut owner = PgConnection::connect_with(&db.connect_options())
        .await
        .expect("owner");
    owner
        .execute(format!("GRANT {} TO {}", role.group(), role.login()).as_str())
        .await
        .expect("membership");
    let app_url = role.url(&db);

    // Without CREATE on the read models' schema the projection cannot set up: `run` says
    // why and exits, instead of retrying what retrying cannot fix.
    let started = std::time::Instant::now();
    let out = bank(&app_url, &nats, &["run"]);
    assert!(!out.status.success(), "run went on without its projection");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("account_balances") && stderr.contains("permission denied"),
        "{stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));

    owner
        .execute(format!("GRANT CREATE ON SCHEMA public TO {}", role.group()).as_str())
        .await
        .expect("CREATE for the read models");

    // The bank, as the application role: commands, the outbox, the projection, the relay.
    let said = succeeded(&bank(&app_url, &nats, &[]), "the scenario as the app role");
    assert!(said.contains("the relay published"), "{said}");
    succeeded(
        &bank(&app_url, &nats, &["simulate", "--commands", "30"]),
        "simulate as the app role",
    );
    let status = succeeded(
        &bank(&app_url, &nats, &["status"]),
        "status as the app role",
    );
    assert!(status.contains("account_balances"), "{status}");

    let published = relayed_event_ids(&db).await;
    let on_bus = bus(&nats.options(), "ANNALS").await;
    // The scenario's events went out during the scenario; simulate's are not relayed yet.
    assert_exactly_once_in_order(&on_bus, &published[..on_bus.len()]);
    assert!(!on_bus.is_empty());

    // The same login cannot touch what was written.
    let mut app = PgConnection::connect(&app_url).await.expect("app");
    for sql in [
        "UPDATE annals.events SET payload = '{}'",
        "DELETE FROM annals.events",
    ] {
        let e = app.execute(sql).await.expect_err(sql);
        assert_eq!(
            e.as_database_error().and_then(|d| d.code()).as_deref(),
            Some("42501"),
            "{sql}: {e}"
        );
    }

    // A shadow rebuild creates a schema: that is the owner's, and the error says why.
    let out = bank(&app_url, &nats, &["rebuild", "account_balances"]);
    assert!(!out.status.success(), "the app role ran a shadow rebuild");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("permission denied"), "{stderr}");
    // The owner can.
    succeeded(
        &bank(&db.url(), &nats, &["rebuild", "account_balances"]),
        "rebuild as the owner",
    );

    app.close().await.expect("close");
    owner
        .execute(format!("REVOKE CREATE ON SCHEMA public FROM {}", role.group()).as_str())
        .await
        .expect("revoke");
    owner.close().await.expect("close");
    db.drop_database().await;
    role.drop_roles().await;
}
