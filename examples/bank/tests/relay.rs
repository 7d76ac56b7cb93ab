//! End to end: the bank on PostgreSQL publishes its account and customer events to NATS
//! JetStream through its relay (a nats-server of the test's own): one message per event,
//! with the envelope in headers; `bank relay` runs the relay alone.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use annals_core::{EventStore, Position, ReadAll};
use annals_nats::{
    headers,
    testkit::{assert_exactly_once_in_order, bus, NatsServer},
};
use annals_store_postgres::testkit::TestDatabase;

const BANK: &str = env!("CARGO_BIN_EXE_bank");

fn bank(db: &TestDatabase, nats: &NatsServer, args: &[&str]) -> Command {
    let mut command = Command::new(BANK);
    command
        .args(["--database-url", &db.url(), "--nats-url", &nats.url()])
        .args(args)
        .env("RUST_LOG", "warn");
    command
}

/// Every account and customer event of the log, in log order.
async fn published_kinds(db: &TestDatabase) -> Vec<uuid::Uuid> {
    db.store()
        .read_all(ReadAll::after(Position::START).limit(100_000))
        .await
        .expect("read")
        .into_iter()
        .filter(|e| e.stream_id.starts_with("account-") || e.stream_id.starts_with("customer-"))
        .map(|e| e.event_id)
        .collect()
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
    assert_exactly_once_in_order(&on_bus, &published_kinds(&db).await);
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
    let expected = published_kinds(&db).await;
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
