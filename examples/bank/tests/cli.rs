//! End to end: the bank binary's operations CLI against a real PostgreSQL (a fresh
//! database per test, at `DATABASE_URL`, default `postgres://root@127.0.0.1:5432/test`).

mod common;

use std::{
    collections::BTreeMap,
    process::{Child, Command, Output, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use annals_core::{decode_event, EventStore, Position, ReadAll, Upcasters};
use annals_store_postgres::PgEventStore;
use bank::{
    balances::{account_id, pg_rows, BalanceRow},
    AccountEvent,
};
use common::bank;
use sqlx::{Connection, Executor, PgConnection};

/// A fresh database; returns its URL and name.
async fn fresh_database() -> (String, String) {
    let db = common::EmptyDatabase::new().await;
    (db.url().to_owned(), db.name().to_owned())
}

async fn drop_database(name: &str) {
    let mut admin = PgConnection::connect(&base_url()).await.expect("admin");
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .expect("DROP DATABASE");
}

fn base_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned())
}

/// Runs the bank binary to completion and returns its output, asserting success.
fn ok(url: &str, args: &[&str]) -> String {
    let out = bank(url, args, &[]).output().expect("run bank");
    assert!(
        out.status.success(),
        "bank {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failing(url: &str, args: &[&str]) -> Output {
    let out = bank(url, args, &[]).output().expect("run bank");
    assert!(!out.status.success(), "bank {args:?} should have failed");
    out
}

fn status(url: &str) -> serde_json::Value {
    let out = ok(url, &["status", "--json"]);
    let all: serde_json::Value = serde_json::from_str(&out).expect("status --json is JSON");
    all[0].clone()
}

fn wait_for_lag_zero(url: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = status(url);
        if s["lag"] == 0 {
            return s;
        }
        assert!(Instant::now() < deadline, "never caught up: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn interrupt(mut child: Child) {
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    let status = child.wait().expect("wait");
    assert!(
        status.success(),
        "`run` did not stop cleanly on Ctrl-C: {status}"
    );
}

/// `account_balances` as a from-scratch fold of the whole log would make it.
async fn expected(store: &PgEventStore) -> BTreeMap<String, BalanceRow> {
    let mut rows: BTreeMap<String, BalanceRow> = BTreeMap::new();
    let mut after = Position::START;
    loop {
        let page = store
            .read_all(ReadAll::after(after).limit(2_000))
            .await
            .expect("read");
        let Some(last) = page.last() else { break };
        after = last.position;
        for raw in &page {
            let event = decode_event::<AccountEvent>(raw, &Upcasters::new()).expect("decode");
            rows.entry(account_id(&raw.stream_id).to_owned())
                .or_default()
                .apply(&event);
        }
    }
    rows
}

async fn actual(store: &PgEventStore, accounts: &[String]) -> BTreeMap<String, BalanceRow> {
    let ids: Vec<&str> = accounts.iter().map(String::as_str).collect();
    pg_rows(store.pool(), &ids)
        .await
        .expect("account_balances")
        .into_iter()
        .collect()
}

/// Builds a wrong read model with the buggy projection and returns the store.
async fn buggy_read_model(url: &str, commands: &str) -> PgEventStore {
    ok(url, &["migrate"]);
    ok(
        url,
        &[
            "simulate",
            "--accounts",
            "25",
            "--commands",
            commands,
            "--prefix",
            "a",
        ],
    );
    let run = bank(url, &["run"], &[("BANK_BALANCES_BUG", "1")])
        .stdout(Stdio::null())
        .spawn()
        .expect("run");
    wait_for_lag_zero(url);
    interrupt(run);
    let store = PgEventStore::connect(url).await.expect("connect");
    let expected = expected(&store).await;
    let accounts: Vec<String> = expected.keys().cloned().collect();
    assert_ne!(
        actual(&store, &accounts).await,
        expected,
        "the deliberate bug did not show"
    );
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_fixes_the_read_model_while_writers_and_readers_carry_on() {
    let (url, db) = fresh_database().await;
    let store = buggy_read_model(&url, "1500").await;
    let rows_before: i64 = sqlx::query_scalar("SELECT count(*) FROM account_balances")
        .fetch_one(store.pool())
        .await
        .expect("count");

    // The fixed build is deployed: live workers run it while the rebuild goes on.
    let live = bank(&url, &["run"], &[])
        .stdout(Stdio::null())
        .spawn()
        .expect("run");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(Ordering::SeqCst) {
                ok(
                    &url,
                    &[
                        "simulate",
                        "--accounts",
                        "5",
                        "--commands",
                        "40",
                        "--prefix",
                        &format!("w{rounds}"),
                    ],
                );
                rounds += 1;
            }
            rounds
        })
    };
    let reader = {
        let (pool, stop) = (store.pool().clone(), stop.clone());
        tokio::spawn(async move {
            let mut reads = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM account_balances")
                    .fetch_one(&pool)
                    .await
                    .expect("the live table stays readable");
                assert!(
                    rows >= rows_before,
                    "a reader saw an empty or partial table: {rows} rows"
                );
                reads += 1;
            }
            reads
        })
    };
    let out = ok(&url, &["rebuild", "account_balances"]);
    assert!(out.contains("swapped it in"), "{out}");
    stop.store(true, Ordering::SeqCst);
    let rounds = tokio::task::spawn_blocking(move || writer.join().expect("writer"))
        .await
        .expect("join");
    let reads = reader.await.expect("reader");
    assert!(
        rounds > 0 && reads > 0,
        "writers ({rounds}) or readers ({reads}) did not run during the rebuild"
    );

    // Lag 0 must be measured against a head that includes every acknowledged append (a
    // transaction elsewhere can hold the visible head back for a moment).
    let last: i64 = sqlx::query_scalar("SELECT max(global_position) FROM annals.events")
        .fetch_one(store.pool())
        .await
        .expect("last position");
    let deadline = Instant::now() + Duration::from_secs(60);
    let caught_up = loop {
        assert!(Instant::now() < deadline, "the head never reached {last}");
        let s = wait_for_lag_zero(&url);
        if s["head"]["sequence"].as_i64() == Some(last) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    interrupt(live);
    assert_eq!(caught_up["dead_letters"], 0);
    let expected = expected(&store).await;
    let accounts: Vec<String> = expected.keys().cloned().collect();
    assert_eq!(
        actual(&store, &accounts).await,
        expected,
        "the rebuilt table differs from a replay"
    );
    let status = status(&url);
    assert_eq!(
        (status["lag"].as_u64(), status["state"].as_str()),
        (Some(0), Some("stopped"))
    );
    store.pool().close().await;
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rebuild_resumes_and_never_touches_the_live_table() {
    let (url, db) = fresh_database().await;
    let store = buggy_read_model(&url, "1800").await;
    let expected = expected(&store).await;
    let accounts: Vec<String> = expected.keys().cloned().collect();
    let live_before = actual(&store, &accounts).await;

    let mut rebuild = bank(
        &url,
        &["rebuild", "account_balances"],
        &[("BANK_BALANCES_SLOW_MS", "400")],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("rebuild");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let progress: Option<i64> = sqlx::query_scalar(
            "SELECT position FROM annals.checkpoints WHERE projection = 'account_balances@rebuild'",
        )
        .fetch_optional(store.pool())
        .await
        .expect("shadow checkpoint");
        if progress.is_some_and(|p| p > 0) {
            break;
        }
        assert!(
            rebuild.try_wait().expect("try_wait").is_none(),
            "the rebuild ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "the rebuild made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rebuild.kill().expect("kill -9 the rebuild");
    rebuild.wait().expect("wait");

    assert_eq!(
        actual(&store, &accounts).await,
        live_before,
        "a killed rebuild changed the live table"
    );
    // Killed: nothing claims to rebuild, and status points at the unfinished rebuild.
    let s = status(&url);
    assert_eq!(s["state"], "stopped", "{s}");
    assert!(
        s["unfinished_rebuild"]["sequence"].as_u64() > Some(0),
        "{s}"
    );
    let out = ok(&url, &["rebuild", "account_balances"]);
    assert!(out.contains("resuming the unfinished rebuild"), "{out}");
    assert_eq!(
        actual(&store, &accounts).await,
        expected,
        "the resumed rebuild differs from a replay"
    );
    let s = status(&url);
    assert_eq!(
        (&s["state"], &s["unfinished_rebuild"]),
        (&serde_json::json!("stopped"), &serde_json::Value::Null)
    );
    store.pool().close().await;
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_errors_and_confirmation() {
    let (url, db) = fresh_database().await;
    ok(&url, &["migrate"]);
    let out = failing(&url, &["rebuild", "no_such_projection"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("account_balances"),
        "does not list the known projections: {stderr}"
    );

    let out = failing("postgres://annals:s3cret@127.0.0.1:1/ledger", &["status"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("127.0.0.1:1"),
        "does not name the host: {stderr}"
    );
    assert!(!stderr.contains("s3cret"), "leaks the password: {stderr}");

    let out = bank(&url, &["reset", "account_balances"], &[])
        .stdin(Stdio::null())
        .output()
        .expect("reset");
    assert!(
        !out.status.success(),
        "reset without --yes and without a terminal went ahead"
    );
    ok(&url, &["simulate", "--accounts", "3", "--commands", "30"]);
    let out = ok(&url, &["reset", "account_balances", "--yes"]);
    assert!(out.contains("replayed account_balances"), "{out}");
    assert_eq!(status(&url)["lag"], 0);
    let out = ok(&url, &["dead-letters", "list"]);
    assert!(out.contains("no dead letters"), "{out}");
    failing(&url, &["dead-letters", "retry", "42"]);
    drop_database(&db).await;
}

/// On a database `migrate` never prepared, every operations command says so and exits,
/// instead of retrying "relation does not exist" forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmigrated_database_is_refused_with_the_fix() {
    let (url, db) = fresh_database().await;
    for args in [
        &["status"][..],
        &["run"],
        &["rebuild", "account_balances"],
        &["dead-letters", "list"],
    ] {
        let started = Instant::now();
        let out = failing(&url, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("not up to date") && stderr.contains("run `migrate`"),
            "{args:?}: {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{args:?} took its time"
        );
    }
    let said = ok(&url, &["migrate", "--info"]);
    assert!(said.contains("pending  0001"), "{said}");
    ok(&url, &["migrate"]);
    let said = ok(&url, &["migrate", "--info"]);
    assert!(
        said.contains("up to date") && !said.contains("pending"),
        "{said}"
    );
    ok(&url, &["status"]);
    drop_database(&db).await;
}
