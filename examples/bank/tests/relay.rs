//! End to end: the bank on PostgreSQL publishes its account and customer events to NATS
//! JetStream through its relay (a nats-server of the test's own): one message per event,
//! with the envelope in headers; `bank relay` runs the relay alone.

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use annals_nats::{
    headers,
    testkit::{assert_exactly_once_in_order, bus, NatsServer},
};
use annals_store_postgres::testkit::TestDatabase;
use common::relayed_event_ids;

const BANK: &str = env!("CARGO_BIN_EXE_bank");

fn bank(db: &TestDatabase, nats: &NatsServer, args: &[&str]) -> Command {
    let mut command = Command::new(BANK);
    command
        .args(["--database-url", &db.url(), "--nats-url", &nats.url()])
        .args(args)
        .env("RUST_LOG", "warn");
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bank_publishes_its_events_to_nats() {
    let nats = NatsServer::start().await;
    let db = TestDatabase::new().await;
    let out = bank(&db, &nats, &[]).output().expect("run bank");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bank failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("the relay published"), "{stdout}");
    assert!(stdout.contains("registering a customer"), "{stdout}");
    let on_bus = bus(&nats.options(), "ANNALS").await;
    assert_exactly_once_in_order(&on_bus, &relayed_event_ids(&db).await);
    let customer = on_bus
        .iter()
        .find(|m| m.subject.starts_with("annals.customer."))
        .expect("the customer event reached the bus");
    assert_eq!(customer.event.event_type, "customer-registered");
    assert_eq!(
        customer
            .headers
            .get(headers::CE_TYPE)
            .map(|v| v.as_str().to_owned()),
        Some("customer-registered".to_owned())
    );
    let payload: serde_json::Value =
        serde_json::from_slice(&customer.event.payload).expect("JSON body");
    assert_eq!(payload["name"], "Grace Hopper");

    // `bank relay` publishes what is appended later, alone.
    let simulated = bank(
        &db,
        &nats,
        &["simulate", "--commands", "40", "--accounts", "4"],
    )
    .output()
    .expect("simulate");
    assert!(simulated.status.success());
    let mut relay = bank(&db, &nats, &["relay"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bank relay");
    let expected = relayed_event_ids(&db).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let on_bus = bus(&nats.options(), "ANNALS").await;
        if on_bus.len() >= expected.len() {
            assert_exactly_once_in_order(&on_bus, &expected);
            break;
        }
        assert!(Instant::now() < deadline, "bank relay never caught up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = relay.kill();
    let _ = relay.wait();
    db.drop_database().await;
}

/// Secrets come from the environment or files and never show: NATS credentials from
/// `NATS_USER` and `NATS_PASSWORD_FILE`, the database URL (with a password) from
/// `DATABASE_URL`, everything at `RUST_LOG=trace`, and `--help` with all of it set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_from_the_environment_never_show() {
    let nats = NatsServer::start_with(
        Some("authorization { users = [ { user: relay, password: \"s3cret-pw\" } ] }\n"),
        &[],
    )
    .await;
    let db = TestDatabase::new().await;
    // The local server trusts local connections: the password is never asked for, but it
    // is in the URL the binary handles.
    let url = db.url().replacen("://root@", "://root:pg-s3cret@", 1);
    let password_file = nats.dir().join("nats-password");
    std::fs::write(&password_file, "s3cret-pw\n").expect("password file");
    let wrong_file = nats.dir().join("wrong-password");
    std::fs::write(&wrong_file, "wr0ng-pw\n").expect("password file");
    let run = |args: &[&str], password: &std::path::Path| {
        Command::new(BANK)
            .args(args)
            .env("DATABASE_URL", &url)
            .env("NATS_URL", nats.url())
            .env("NATS_USER", "relay")
            .env("NATS_PASSWORD_FILE", password)
            .env("RUST_LOG", "trace")
            .output()
            .expect("run bank")
    };
    let shown = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let secrets = ["s3cret-pw", "wr0ng-pw", "pg-s3cret"];
    let assert_hidden = |out: &std::process::Output, what: &str| {
        let text = shown(out);
        for secret in secrets {
            assert!(!text.contains(secret), "{what} shows {secret}");
        }
        text
    };

    // The scenario (given the URL on purpose), with the relay's credentials from the
    // environment; everything at TRACE.
    let out = run(&["--database-url", &url], &password_file);
    let text = assert_hidden(&out, "the scenario");
    assert!(out.status.success(), "the scenario failed: {text}");
    assert!(text.contains("TRACE"), "RUST_LOG=trace logged nothing");
    assert!(text.contains("the relay published"), "{text}");
    assert!(!bus(
        &nats
            .options()
            .user_password("relay", annals_nats::Secret::new("s3cret-pw")),
        "ANNALS"
    )
    .await
    .is_empty());

    // An operations command takes DATABASE_URL.
    let out = run(&["status"], &password_file);
    let text = assert_hidden(&out, "status");
    assert!(
        out.status.success(),
        "status with DATABASE_URL failed: {text}"
    );
    assert!(text.contains("bank-relay"), "{text}");

    // Wrong credentials: a clear refusal, no secret.
    let out = run(&["relay"], &wrong_file);
    let text = assert_hidden(&out, "a refused relay");
    assert!(!out.status.success());
    assert!(text.contains("refused the credentials"), "{text}");

    // Help with everything set shows no value from the environment.
    for args in [&["--help"][..], &["status", "--help"], &["relay", "--help"]] {
        let out = run(args, &password_file);
        assert!(out.status.success());
        assert_hidden(&out, "--help");
    }
    db.drop_database().await;
}
