//! The operator's side of the bank binary, end to end against a real PostgreSQL: a way out
//! of a poison event (`skip`, `rebuild --skip-failures`), Ctrl-C on long commands, status
//! with times and JSON, clean logs and errors, completions and `migrate`'s report.

mod common;

use std::{
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use annals_core::{encode_event, event_type_of, Encoding, EventStore, ExpectedVersion, NewEvent};
use annals_store_postgres::testkit::TestDatabase;
use bank::{balances::pg_rows, AccountEvent};
use common::bank;
use serde_json::Value;

const BANK: &str = env!("CARGO_BIN_EXE_bank");

fn run_bank(url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    bank(url, args, env).output().expect("run bank")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(url: &str, args: &[&str]) -> String {
    let out = run_bank(url, args, &[]);
    assert!(
        out.status.success(),
        "bank {args:?} failed: {}",
        stderr(&out)
    );
    stdout(&out)
}

/// `bank simulate`: `commands` deposits and withdrawals over `accounts` accounts.
fn simulate(url: &str, accounts: usize, commands: usize, prefix: &str) {
    let (accounts, commands) = (accounts.to_string(), commands.to_string());
    ok(
        url,
        &[
            "simulate",
            "--accounts",
            &accounts,
            "--commands",
            &commands,
            "--prefix",
            prefix,
        ],
    );
}

fn json(url: &str, args: &[&str]) -> Value {
    serde_json::from_str(&ok(url, args)).unwrap_or_else(|e| panic!("{args:?} is not JSON: {e}"))
}

fn balances(url: &str) -> Value {
    json(url, &["status", "--json"])[0].clone()
}

fn letters(url: &str) -> Vec<Value> {
    match json(url, &["dead-letters", "list", "--json"]) {
        Value::Array(all) => all,
        other => panic!("not a list: {other}"),
    }
}

/// Polls `status --json` until `done` holds for the projection.
fn wait_for(url: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = balances(url);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never {what}: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sigint(child: &Child) {
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(sent.success());
}

async fn deposit(store: &annals_store_postgres::PgEventStore, stream: &str, amount: i64) {
    let event = encode_event(&AccountEvent::Deposited { amount }, Encoding::Json).expect("encode");
    store
        .append_to_stream(stream, ExpectedVersion::Any, vec![event])
        .await
        .expect("append");
}

/// An event `account_balances` reads but can never decode.
async fn poison(store: &annals_store_postgres::PgEventStore, stream: &str) {
    let event_type = event_type_of(&AccountEvent::Deposited { amount: 1 }).expect("type");
    let event = NewEvent::new(
        event_type,
        1,
        Encoding::Json,
        b"{\"amount\": \"lots\"}".to_vec(),
    );
    store
        .append_to_stream(stream, ExpectedVersion::Any, vec![event])
        .await
        .expect("append");
}

async fn balance(db: &TestDatabase, account: &str) -> i64 {
    let rows = pg_rows(db.store().pool(), &[account]).await.expect("rows");
    rows.first().map_or(0, |(_, row)| row.balance)
}

/// A poison event halts the projection; `skip --park-stream` moves it to the dead letters
/// and parks the rest of its stream while the running worker resumes by itself; other
/// streams go on; discarding the letter releases the parked events in order. A rebuild
/// refuses the same event under the Halt policy and dead-letters it with
/// `--skip-failures`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_skipped_parked_released_and_rebuilt_past() {
    let db = TestDatabase::new().await;
    let url = db.url();
    simulate(&url, 2, 10, "p");
    let store = db.store();
    let a0_before_poison = {
        let run = bank(&url, &["run"], &[])
            .stdout(Stdio::null())
            .spawn()
            .expect("run");
        wait_for(&url, "caught up", |s| {
            s["lag"] == 0 && s["checkpoint"]["sequence"].as_u64() > Some(0)
        });
        sigint(&run);
        run.wait_with_output().expect("run");
        balance(&db, "p-0").await
    };
    poison(store, "account-p-0").await;
    deposit(store, "account-p-0", 7).await;
    deposit(store, "account-p-0", 11).await;
    let a1_before = balance(&db, "p-1").await;
    deposit(store, "account-p-1", 5).await;

    let run = bank(&url, &["run"], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let halted = wait_for(&url, "halted", |s| s["state"] == "halted");
    assert!(
        halted["error"]
            .as_str()
            .is_some_and(|e| e.contains("attempts")),
        "{halted}"
    );
    let said = ok(&url, &["status"]);
    assert!(
        said.contains("skip account_balances"),
        "status does not say the way out: {said}"
    );

    let said = ok(&url, &["skip", "account_balances", "--park-stream"]);
    assert!(said.contains("skipped into dead letter #"), "{said}");
    // The running worker resumes by itself; p-1 goes on, p-0's later deposits are parked.
    wait_for(&url, "resumed and caught up", |s| {
        s["state"] == "running" && s["lag"] == 0
    });
    assert_eq!(balance(&db, "p-1").await, a1_before + 5);
    assert_eq!(
        balance(&db, "p-0").await,
        a0_before_poison,
        "a parked deposit was applied"
    );
    let all = letters(&url);
    assert_eq!(
        all.len(),
        3,
        "the poison event and two parked ones: {all:?}"
    );
    let head = &all[0];
    assert!(
        head["attempts"].as_u64() >= Some(1) && head["parks_stream"] == true,
        "{head}"
    );
    assert!(
        all[1..]
            .iter()
            .all(|l| l["attempts"] == 0 && l["stream_id"] == "account-p-0"),
        "{all:?}"
    );

    // A retry of the poison letter fails again, said once, without a backtrace.
    let id = head["id"].as_i64().expect("id").to_string();
    let out = run_bank(
        &url,
        &["dead-letters", "retry", &id],
        &[("RUST_BACKTRACE", "1")],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        !err.contains("stack backtrace") && !err.contains("panicked"),
        "{err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "the error is printed once, on one line: {err}"
    );
    let cause = lines[0].rsplit(": ").next().expect("a cause");
    assert_eq!(
        err.matches(cause).count(),
        1,
        "the cause is repeated: {err}"
    );
    // Parked events cannot jump the queue.
    let parked = all[1]["id"].as_i64().expect("id").to_string();
    let out = run_bank(&url, &["dead-letters", "retry", &parked], &[]);
    assert!(stderr(&out).contains("parked behind"), "{}", stderr(&out));

    ok(&url, &["dead-letters", "discard", &id]);
    assert_eq!(
        balance(&db, "p-0").await,
        a0_before_poison + 18,
        "the parked deposits were not released"
    );
    assert!(letters(&url).is_empty());
    sigint(&run);
    let out = run.wait_with_output().expect("run");
    assert!(out.status.success(), "{}", stderr(&out));

    // A rebuild meets the same event: the Halt policy refuses it, with the way out.
    let out = run_bank(&url, &["rebuild", "account_balances"], &[]);
    assert!(
        !out.status.success() && stderr(&out).contains("--skip-failures"),
        "{}",
        stderr(&out)
    );
    let said = ok(&url, &["rebuild", "account_balances", "--skip-failures"]);
    assert!(
        said.contains("swapped it in") && said.contains("1 dead letters"),
        "{said}"
    );
    let all = letters(&url);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(
        (all[0]["projection"].as_str(), all[0]["stream_id"].as_str()),
        (Some("account_balances"), Some("account-p-0"))
    );
    assert_eq!(
        balance(&db, "p-0").await,
        a0_before_poison + 18,
        "the rebuild differs from the live model"
    );
    assert_eq!(balance(&db, "p-1").await, a1_before + 5);
    db.drop_database().await;
}

/// Ctrl-C on `rebuild` and `reset`: a clear message, a non-zero exit, nothing left claiming
/// to run, and the work resumable; `reset` shows progress while it replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_rebuild_and_reset_leaves_nothing_claiming_to_run() {
    let db = TestDatabase::new().await;
    let url = db.url();
    simulate(&url, 20, 3000, "c");
    // About 1 s per batch of 500: the replay of ~3,000 events takes several seconds.
    let slow = [("BANK_BALANCES_SLOW_MS", "1000")];

    let rebuild = bank(&url, &["rebuild", "account_balances"], &slow)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rebuild");
    wait_for(&url, "rebuilding", |s| s["state"] == "rebuilding");
    // Past the first page (about a second), so there is progress to resume from.
    std::thread::sleep(Duration::from_millis(1500));
    sigint(&rebuild);
    let out = rebuild.wait_with_output().expect("rebuild");
    assert!(!out.status.success(), "an interrupted rebuild exited 0");
    let said = stdout(&out);
    assert!(
        said.contains("interrupted") && said.contains("to resume"),
        "{said}"
    );
    let s = balances(&url);
    assert_ne!(
        s["state"], "rebuilding",
        "status still claims a rebuild runs: {s}"
    );
    assert!(
        s["unfinished_rebuild"]["sequence"].as_u64() > Some(0),
        "{s}"
    );
    let said = ok(&url, &["rebuild", "account_balances"]);
    assert!(said.contains("resuming the unfinished rebuild"), "{said}");
    assert!(balances(&url)["unfinished_rebuild"].is_null());

    let reset = bank(&url, &["reset", "account_balances", "--yes"], &slow)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("reset");
    wait_for(&url, "replaying", |s| {
        s["checkpoint"]["sequence"].as_u64() > Some(0)
    });
    std::thread::sleep(Duration::from_millis(2500));
    sigint(&reset);
    let out = reset.wait_with_output().expect("reset");
    assert!(!out.status.success(), "an interrupted reset exited 0");
    let (said, progress) = (stdout(&out), stderr(&out));
    assert!(
        said.contains("reset account_balances; replaying"),
        "nothing said before the replay: {said}"
    );
    assert!(
        said.contains("interrupted") && said.contains("`run` continues"),
        "{said}"
    );
    assert!(
        progress.contains("replaying account_balances:"),
        "no progress: {progress}"
    );
    let s = balances(&url);
    assert_eq!(s["state"], "stopped", "{s}");
    assert!(s["lag"].as_u64() > Some(0), "{s}");
    db.drop_database().await;
}

/// Status shows times next to positions and JSON has numbers; dead letters list as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_has_times_and_json_numbers() {
    let db = TestDatabase::new().await;
    let url = db.url();
    simulate(&url, 2, 20, "s");
    std::thread::sleep(Duration::from_millis(1200));
    let s = balances(&url);
    assert!(s["lag"].as_u64() > Some(0), "{s}");
    assert!(
        s["lag_seconds"].as_f64() >= Some(1.0),
        "lag in seconds: {s}"
    );
    assert!(
        s["oldest_pending_at"].is_string() && s["checkpoint_at"].is_null(),
        "{s}"
    );
    assert!(
        s["head"]["sequence"].is_u64() && s["checkpoint"]["sequence"] == 0,
        "{s}"
    );
    let said = ok(&url, &["status"]);
    assert!(
        said.contains("BEHIND BY") && said.contains("MOVED"),
        "{said}"
    );
    assert!(
        said.contains("transfer_saga: open instances 0, pending timers 0"),
        "the process manager's figures: {said}"
    );
    let all = json(&url, &["status", "--json"]);
    let saga = all
        .as_array()
        .and_then(|all| all.iter().find(|s| s["kind"] == "process-manager"))
        .expect("the transfer process in status");
    assert_eq!(saga["details"]["open_instances"], 0, "{saga}");

    let run = bank(&url, &["run"], &[])
        .stdout(Stdio::null())
        .spawn()
        .expect("run");
    let s = wait_for(&url, "caught up", |s| {
        s["lag"] == 0 && !s["checkpoint_at"].is_null()
    });
    assert_eq!(
        (s["lag_seconds"].as_f64(), &s["oldest_pending_at"]),
        (Some(0.0), &Value::Null)
    );
    for _ in 0..20 {
        let s = balances(&url);
        assert!(
            s["checkpoint"]["sequence"].as_u64() <= s["head"]["sequence"].as_u64(),
            "checkpoint ahead of head: {s}"
        );
    }
    assert!(
        s["last_event_at"].is_string() && s["checkpoint_event_at"] == s["last_event_at"],
        "caught up: the checkpoint's event is the newest: {s}"
    );
    let said = ok(&url, &["status"]);
    assert!(
        said.contains("log head: event") && said.contains(" ago"),
        "{said}"
    );
    sigint(&run);
    run.wait_with_output().expect("run");
    assert_eq!(
        json(&url, &["dead-letters", "list", "--json"]),
        Value::Array(vec![])
    );
    db.drop_database().await;
}

/// Logs without colour codes off a terminal, without driver NOTICEs, as JSON on request;
/// `migrate` says what it applied; completions; errors with the driver's reason; no panic
/// on a closed pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_errors_completions_and_migrate_are_fit_for_operators() {
    let db = TestDatabase::new().await;
    let url = db.url();
    let said = ok(&url, &["migrate"]);
    assert!(said.contains("up to date; nothing to apply"), "{said}");
    simulate(&url, 2, 10, "sim");

    for format in ["text", "json"] {
        let run = bank(
            &url,
            &["run", "--log-format", format],
            &[("RUST_LOG", "info")],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
        wait_for(&url, "caught up", |s| {
            s["lag"] == 0 && s["state"] == "running"
        });
        sigint(&run);
        let out = run.wait_with_output().expect("run");
        let logs = stderr(&out);
        assert!(
            logs.contains("lease acquired"),
            "{format}: no INFO logs: {logs}"
        );
        assert!(
            !logs.contains('\u{1b}'),
            "{format}: colour codes off a terminal: {logs}"
        );
        assert!(
            !logs.contains("already exists"),
            "{format}: a driver NOTICE: {logs}"
        );
        if format == "json" {
            for line in logs.lines().filter(|l| !l.is_empty()) {
                let parsed: Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(parsed["level"].is_string(), "{line}");
            }
        }
    }

    let out = run_bank("postgres://root@127.0.0.1:notaport/x", &["status"], &[]);
    assert!(
        stderr(&out).contains("invalid port"),
        "the driver's reason is hidden: {}",
        stderr(&out)
    );

    let completions = ok(&url, &["completions", "bash"]);
    assert!(
        completions.contains("complete") && completions.contains("dead-letters"),
        "{completions}"
    );

    // A reader that goes away early: the writer ends quietly, as Unix tools do.
    for args in ["completions bash", ""] {
        let piped = Command::new("sh")
            .arg("-c")
            .arg(format!("'{BANK}' {args} | head -c 10 >/dev/null"))
            .env_remove("DATABASE_URL")
            .output()
            .expect("sh");
        let err = stderr(&piped);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "`bank {args} | head`: {err}"
        );
    }
    db.drop_database().await;
}

/// A fresh database: `migrate` lists each migration it applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_lists_what_it_applied() {
    let db = common::EmptyDatabase::new().await;
    let said = ok(db.url(), &["migrate"]);
    assert!(
        said.contains("applied  0001") && said.contains("applied  0008"),
        "{said}"
    );
    let said = ok(db.url(), &["migrate"]);
    assert!(said.contains("nothing to apply"), "{said}");
    db.drop().await;
}

/// `status --check` fails, saying why, on a halted projection and on dead letters, and
/// passes once they are dealt with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_check_alerts_on_halts_dead_letters_and_lag() {
    let db = TestDatabase::new().await;
    let url = db.url();
    simulate(&url, 2, 10, "k");
    let out = run_bank(&url, &["status", "--check", "--max-lag", "5"], &[]);
    assert!(!out.status.success(), "a lag past the threshold passed");
    assert!(stderr(&out).contains("lags"), "{}", stderr(&out));

    poison(db.store(), "account-k-0").await;
    let run = bank(&url, &["run"], &[])
        .stdout(Stdio::null())
        .spawn()
        .expect("run");
    wait_for(&url, "halted", |s| s["state"] == "halted");
    let out = run_bank(&url, &["status", "--check"], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("account_balances is halted"),
        "{}",
        stderr(&out)
    );

    let letter = ok(&url, &["skip", "account_balances"]);
    assert!(letter.contains("dead letter"), "{letter}");
    wait_for(&url, "resumed", |s| {
        s["state"] == "running" && s["lag"] == 0
    });
    let out = run_bank(&url, &["status", "--check"], &[]);
    assert!(!out.status.success(), "dead letters passed the check");
    assert!(
        stderr(&out).contains("holds 1 dead letters"),
        "{}",
        stderr(&out)
    );

    let id = letters(&url)[0]["id"].as_i64().expect("id").to_string();
    ok(&url, &["dead-letters", "discard", &id]);
    let said = ok(&url, &["status", "--check"]);
    assert!(said.contains("check passed"), "{said}");
    sigint(&run);
    run.wait_with_output().expect("run");
    db.drop_database().await;
}

/// An open transaction anywhere on the server holds every reader back: status says how
/// many events and names the session; --check counts them as lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_transaction_holding_the_log_back() {
    use sqlx::{Connection, Executor};
    let db = TestDatabase::new().await;
    let url = db.url();
    let mut holder = sqlx::PgConnection::connect(&url).await.expect("connect");
    holder.execute("BEGIN").await.expect("begin");
    let _xid: i64 = sqlx::query_scalar("SELECT txid_current()")
        .fetch_one(&mut holder)
        .await
        .expect("take a transaction id");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut holder)
        .await
        .expect("pid");
    simulate(&url, 2, 10, "h");
    let said = ok(&url, &["status"]);
    assert!(
        said.contains("held back from every reader") && said.contains(&format!("pid {pid}")),
        "{said}"
    );
    assert!(said.contains("idle in transaction"), "{said}");
    assert!(balances(&url)["horizon_lag"].as_u64() > Some(0));
    let out = run_bank(&url, &["status", "--check", "--max-lag", "1000"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_bank(&url, &["status", "--check", "--max-lag", "0"], &[]);
    assert!(
        !out.status.success(),
        "a held-back log passed a zero-lag check"
    );

    holder.execute("ROLLBACK").await.expect("rollback");
    let said = ok(&url, &["status"]);
    assert!(!said.contains("held back"), "{said}");
    assert_eq!(balances(&url)["horizon_lag"], 0);
    db.drop_database().await;
}

/// `rebuild --until` builds the read model as it stood at a time into the shadow, leaves
/// the live table alone, and a later `rebuild` finishes and swaps it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_until_a_time_keeps_the_model_as_it_stood_in_the_shadow() {
    let db = TestDatabase::new().await;
    let url = db.url();
    simulate(&url, 3, 30, "early");
    std::thread::sleep(Duration::from_millis(50));
    let between = chrono::Utc::now().to_rfc3339();
    std::thread::sleep(Duration::from_millis(50));
    simulate(&url, 2, 20, "late");

    let said = ok(&url, &["rebuild", "account_balances", "--until", &between]);
    assert!(
        said.contains("not swapped") && said.contains("shadow schema"),
        "{said}"
    );
    let shadow = said
        .split("shadow schema ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .expect("the shadow schema's name")
        .trim()
        .to_owned();
    let then: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT account_id FROM \"{shadow}\".account_balances ORDER BY account_id"
    ))
    .fetch_all(db.store().pool())
    .await
    .expect("the shadow table");
    assert!(
        !then.is_empty() && then.iter().all(|a| a.starts_with("early-")),
        "as of the time, only the early accounts: {then:?}"
    );
    assert!(!balances(&url)["unfinished_rebuild"].is_null());
    let out = run_bank(
        &url,
        &["rebuild", "account_balances", "--until", "yesterday"],
        &[],
    );
    assert!(stderr(&out).contains("not a time"), "{}", stderr(&out));

    let said = ok(&url, &["rebuild", "account_balances"]);
    assert!(
        said.contains("resuming") && said.contains("swapped it in"),
        "{said}"
    );
    let now: i64 =
        sqlx::query_scalar("SELECT count(*) FROM account_balances WHERE account_id LIKE 'late-%'")
            .fetch_one(db.store().pool())
            .await
            .expect("live table");
    assert!(now > 0, "the finished rebuild lacks the late accounts");
    db.drop_database().await;
}

/// `verify` decodes stored history with the current code: zero on a clean database; on one
/// with a corrupt event, non-zero, naming it; `--sample` and `--since` narrow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_events_the_code_cannot_read() {
    let db = TestDatabase::new().await;
    let url = db.url();
    simulate(&url, 3, 30, "v");
    let said = ok(&url, &["verify"]);
    assert!(
        said.contains("every checked one decodes") && said.contains("money-deposited"),
        "{said}"
    );

    poison(db.store(), "account-v-1").await;
    let out = run_bank(&url, &["verify"], &[]);
    assert!(!out.status.success(), "a corrupt event passed");
    let said = stdout(&out);
    assert!(
        said.contains("FAILED account-v-1@") && said.contains("money-deposited"),
        "the corrupt event is not named: {said}"
    );
    assert!(stderr(&out).contains("1 of "), "{}", stderr(&out));

    // Since a time after the corrupt event: nothing to fail.
    std::thread::sleep(Duration::from_millis(20));
    let since = chrono::Utc::now().to_rfc3339();
    simulate(&url, 2, 10, "w");
    let said = ok(&url, &["verify", "--since", &since]);
    assert!(said.contains("every checked one decodes"), "{said}");
    db.drop_database().await;
}

/// `schemas write` and `schemas check` through the binary, with no database: a recorded
/// field the code no longer has fails, naming the event type and the field.
#[test]
fn schema_check_names_an_incompatible_change() {
    let dir = std::env::temp_dir().join(format!("bank-schemas-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("schemas.json");
    let file = file.to_str().expect("utf-8 path");
    let run = |args: &[&str]| {
        std::process::Command::new(BANK)
            .args(args)
            .env_remove("DATABASE_URL")
            .output()
            .expect("bank")
    };
    let out = run(&["schemas", "write", file]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["schemas", "check", file]);
    assert!(
        out.status.success() && stdout(&out).contains("compatible"),
        "{}",
        stderr(&out)
    );

    // The recorded history knows a field the code dropped.
    let mut recorded: Value =
        serde_json::from_str(&std::fs::read_to_string(file).expect("read")).expect("json");
    recorded["account-opened"]["schema"]["properties"]["branch"] =
        serde_json::json!({"type": "string"});
    std::fs::write(file, recorded.to_string()).expect("write");
    let out = run(&["schemas", "check", file]);
    assert!(!out.status.success(), "a removed field passed");
    assert!(
        stdout(&out).contains("account-opened: field `branch` was removed"),
        "{}",
        stdout(&out)
    );
    let _ = std::fs::remove_dir_all(dir);
}
