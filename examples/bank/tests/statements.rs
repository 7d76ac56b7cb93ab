//! The `statements` service consumes the bank's account events from NATS JetStream through
//! an inbox consumer (a nats-server of the test's own, real PostgreSQL): its
//! `account_balances` equals the one the bank keeps from its own log, with every event
//! applied once and each stream in order, through kills, redeliveries, two processes on one
//! durable consumer, and a poison message that is parked and then retried from the CLI.
//!
//! `ANNALS_TORTURE_KILLS` sets how many times the consumers are killed (default 20).

mod common;

use std::{
    collections::BTreeMap,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use annals_nats::testkit::NatsServer;
use annals_store_postgres::testkit::TestDatabase;
use sqlx::Row;

const BANK: &str = env!("CARGO_BIN_EXE_bank");
const WAIT: Duration = Duration::from_secs(120);

fn bank(db: &TestDatabase, nats: &NatsServer, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BANK);
    command
        .args(["--database-url", &db.url(), "--nats-url", &nats.url()])
        .args(args)
        .env("RUST_LOG", "warn")
        .env("BANK_STATEMENTS_ACK_WAIT_MS", "1000")
        .env_remove("BANK_STATEMENTS_REFUSE")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

#[track_caller]
fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn spawn(command: &mut Command) -> Child {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn bank")
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

type Balances = BTreeMap<String, (i64, String, i64)>;

/// `account_balances` of a schema: balance, status and events applied per account.
async fn balances(db: &TestDatabase, schema: &str) -> Balances {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{schema}.account_balances"))
        .fetch_one(db.store().pool())
        .await
        .expect("to_regclass");
    if !exists {
        return Balances::new();
    }
    sqlx::query(&format!(
        "SELECT account_id, balance, status, events_applied FROM {schema}.account_balances"
    ))
    .fetch_all(db.store().pool())
    .await
    .expect("account_balances")
    .iter()
    .map(|r| {
        (
            r.get("account_id"),
            (r.get("balance"), r.get("status"), r.get("events_applied")),
        )
    })
    .collect()
}

/// How many account events the log holds.
async fn account_events(db: &TestDatabase) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM annals.events WHERE stream_id LIKE 'account-%'")
        .fetch_one(db.store().pool())
        .await
        .expect("count")
}

/// Waits until the service's table equals the bank's own and every account event of the
/// log is in both, each once (`events_applied` counts applications).
async fn converge(db: &TestDatabase) -> Balances {
    let deadline = Instant::now() + WAIT;
    loop {
        let (local, remote, events) = (
            balances(db, "public").await,
            balances(db, "statements").await,
            account_events(db).await,
        );
        let applied: i64 = remote.values().map(|r| r.2).sum();
        let local_applied: i64 = local.values().map(|r| r.2).sum();
        assert!(
            applied <= events,
            "the service applied {applied} events of {events}: some twice"
        );
        if local == remote && applied == events && local_applied == events {
            return remote;
        }
        assert!(
            Instant::now() < deadline,
            "the service never caught up: {applied} of {events} events applied; tables equal: {}",
            local == remote
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every stream's inbox rows: each version once, and applied in version order.
async fn assert_inbox_in_order(db: &TestDatabase) {
    let out_of_order: Vec<(String, i64)> = sqlx::query_as(
        "SELECT stream_id, stream_version FROM (
             SELECT stream_id, stream_version, applied_at,
                    lag(applied_at) OVER (PARTITION BY stream_id ORDER BY stream_version) AS before
             FROM statements.inbox WHERE consumer = 'statements') x
         WHERE applied_at < before",
    )
    .fetch_all(db.store().pool())
    .await
    .expect("inbox order");
    assert!(
        out_of_order.is_empty(),
        "applied before their predecessor: {out_of_order:?}"
    );
    let gaps: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT stream_id, count(*), max(stream_version) FROM statements.inbox
         WHERE consumer = 'statements' GROUP BY stream_id HAVING count(*) <> max(stream_version)",
    )
    .fetch_all(db.store().pool())
    .await
    .expect("inbox gaps");
    assert!(
        gaps.is_empty(),
        "streams with versions missing from the inbox: {gaps:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statements_service_equals_the_bank_read_model() {
    let nats = NatsServer::start().await;
    let db = TestDatabase::new().await;
    ok(
        bank(&db, &nats, &[], &[]).output().expect("scenario"),
        "the scenario",
    );
    ok(
        bank(
            &db,
            &nats,
            &["simulate", "--commands", "200", "--accounts", "12"],
            &[],
        )
        .output()
        .expect("simulate"),
        "simulate",
    );
    // The bank's workers (projection and relay), and the service.
    let bank_run = spawn(&mut bank(&db, &nats, &["run"], &[]));
    let service = spawn(&mut bank(&db, &nats, &["statements", "run"], &[]));
    let table = converge(&db).await;
    assert!(table.len() >= 14, "{table:?}");
    assert_inbox_in_order(&db).await;
    let status = ok(
        bank(&db, &nats, &["statements", "status"], &[])
            .output()
            .expect("status"),
        "statements status",
    );
    assert!(
        status.contains("statements") && status.contains("consumer"),
        "{status}"
    );
    stop(service);
    stop(bank_run);
    db.drop_database().await;
}

/// Deterministic pseudo-random numbers (no dependency, reproducible by seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below.max(1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_killed_at_random_points_apply_every_event_once_in_order() {
    let kills: u64 = std::env::var("ANNALS_TORTURE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let nats = NatsServer::start().await;
    let db = TestDatabase::new().await;
    ok(
        bank(&db, &nats, &["statements", "migrate"], &[])
            .output()
            .expect("migrate"),
        "statements migrate",
    );
    let bank_run = spawn(&mut bank(&db, &nats, &["run"], &[]));
    let service = || spawn(&mut bank(&db, &nats, &["statements", "run"], &[]));
    let mut services = [service(), service()];

    // Writers append while the consumers are killed and restarted.
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let store = db.store().clone();
            tokio::spawn(async move {
                for round in 0..4 {
                    bank::simulate(store.clone(), &format!("w{w}r{round}"), 8, 60)
                        .await
                        .expect("simulate");
                }
            })
        })
        .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(100 + rng.next(600))).await;
        let victim = rng.next(2) as usize;
        let _ = services[victim].kill();
        let _ = services[victim].wait();
        tokio::time::sleep(Duration::from_millis(rng.next(300))).await;
        services[victim] = service();
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    converge(&db).await;
    assert_inbox_in_order(&db).await;
    let letters: i64 = sqlx::query_scalar("SELECT count(*) FROM statements.dead_letters")
        .fetch_one(db.store().pool())
        .await
        .expect("dead letters");
    assert_eq!(letters, 0, "a healthy run left dead letters");
    for service in services {
        stop(service);
    }
    stop(bank_run);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_parked_and_retried_from_the_cli() {
    let nats = NatsServer::start().await;
    let db = TestDatabase::new().await;
    ok(
        bank(
            &db,
            &nats,
            &[
                "simulate",
                "--commands",
                "60",
                "--accounts",
                "3",
                "--prefix",
                "p",
            ],
            &[],
        )
        .output()
        .expect("simulate"),
        "simulate",
    );
    ok(
        bank(&db, &nats, &["statements", "migrate"], &[])
            .output()
            .expect("migrate"),
        "statements migrate",
    );
    let bank_run = spawn(&mut bank(&db, &nats, &["run"], &[]));
    // The service refuses account p-1: after three deliveries its first event is a dead
    // letter, and the account's later events park behind it; the others go on.
    let refusing = spawn(&mut bank(
        &db,
        &nats,
        &["statements", "run"],
        &[("BANK_STATEMENTS_REFUSE", "p-1")],
    ));
    let p1_events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM annals.events WHERE stream_id = 'account-p-1'")
            .fetch_one(db.store().pool())
            .await
            .expect("count");
    let deadline = Instant::now() + WAIT;
    let letters = loop {
        let list = ok(
            bank(&db, &nats, &["statements", "dead-letters", "list"], &[])
                .output()
                .expect("list"),
            "dead-letters list",
        );
        let letters: Vec<String> = list
            .lines()
            .filter(|l| l.contains("account-p-1"))
            .map(str::to_owned)
            .collect();
        if letters.len() as i64 == p1_events {
            break letters;
        }
        assert!(
            Instant::now() < deadline,
            "account p-1's events never all reached the dead letters: {list}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let head = letters
        .iter()
        .find(|l| l.contains("account-p-1@1 "))
        .unwrap_or_else(|| panic!("no head letter for version 1: {letters:?}"));
    assert!(
        head.contains("refuse") && head.contains("[3 attempts]"),
        "{head}"
    );
    assert!(
        letters
            .iter()
            .filter(|l| l.contains("parked behind"))
            .count() as i64
            == p1_events - 1,
        "{letters:?}"
    );
    // The other accounts are all there; p-1 is not.
    let remote = balances(&db, "statements").await;
    assert!(!remote.contains_key("p-1"), "{remote:?}");
    assert!(
        remote.contains_key("p-0") && remote.contains_key("p-2"),
        "{remote:?}"
    );

    // A parked letter cannot jump its stream's head.
    let parked_id = letters
        .iter()
        .find(|l| l.contains("parked behind"))
        .and_then(|l| {
            l.trim_start_matches('#')
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .expect("a parked letter's id");
    let out = bank(
        &db,
        &nats,
        &["statements", "dead-letters", "retry", &parked_id],
        &[],
    )
    .output()
    .expect("retry parked");
    assert!(
        !out.status.success(),
        "a parked letter was retried before its head"
    );

    // The fix ships (the service restarts without the knob); the operator retries the head
    // letter, which releases the parked ones in order.
    stop(refusing);
    let service = spawn(&mut bank(&db, &nats, &["statements", "run"], &[]));
    let head_id = head
        .trim_start_matches('#')
        .split_whitespace()
        .next()
        .expect("the head letter's id");
    ok(
        bank(
            &db,
            &nats,
            &["statements", "dead-letters", "retry", head_id],
            &[],
        )
        .output()
        .expect("retry"),
        "dead-letters retry",
    );
    converge(&db).await;
    let left = ok(
        bank(&db, &nats, &["statements", "dead-letters", "list"], &[])
            .output()
            .expect("list"),
        "dead-letters list",
    );
    assert!(!left.contains("account-p-1"), "{left}");
    stop(service);
    stop(bank_run);
    db.drop_database().await;
}
