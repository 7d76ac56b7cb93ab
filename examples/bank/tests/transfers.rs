//! The transfer process manager under fire, on both stores: 500 concurrent transfers among
//! 50 accounts, some to closed, unknown or other-currency accounts, some whose credit is
//! held back past the transfer's timeout (so the timeout races a credit that still lands),
//! one reply in seven lost after the account applied the command, while the process-manager worker is killed at 20 random points (`ANNALS_TORTURE_KILLS`
//! for more). At the end money is conserved, every transfer ended once (completed, refused,
//! abandoned before anything moved, or compensated), no account was debited, credited,
//! refunded or reversed twice for one transfer, and no instance or timer is left open.

use std::{collections::HashMap, sync::Arc, time::Duration};

use annals_core::{EventStore, Position, ReadAll, Repository, SnapshotStore};
use annals_projections::{
    CheckpointStore, EngineOptions, FailurePolicy, MemoryCheckpoints, PgCheckpoints,
    ProcessRuntime, ProcessStore, ProjectionEngine, RetryPolicy,
};
use annals_store_memory::MemoryEventStore;
use annals_store_postgres::testkit::TestDatabase;
use bank::{
    transfer::{self, Accounts, RequestTransfer, Transfer},
    AccountCommand, BankAccount,
};

const TRANSFERS: usize = 500;
const ACCOUNTS: usize = 50;
const WAIT: Duration = Duration::from_secs(120);

fn kills() -> usize {
    std::env::var("ANNALS_TORTURE_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(20)
}

/// Opens the accounts: every 10th closed, every 13th in USD; returns the money in them.
async fn open_accounts<S: EventStore + SnapshotStore>(store: S) -> i64 {
    let accounts = Repository::<BankAccount, _>::new(store);
    let mut total = 0;
    for a in 0..ACCOUNTS {
        let id = format!("a{a}");
        let currency = if a % 13 == 5 { "USD" } else { "EUR" };
        accounts
            .execute(
                &id,
                AccountCommand::Open {
                    owner: id.clone(),
                    currency: currency.into(),
                },
            )
            .await
            .expect("open");
        if a % 10 == 7 {
            accounts
                .execute(&id, AccountCommand::Close)
                .await
                .expect("close");
        } else {
            accounts
                .execute(&id, AccountCommand::Deposit { amount: 1_000 })
                .await
                .expect("deposit");
            total += 1_000;
        }
    }
    total
}

/// Held: every 10th transfer's credit waits 5 s, and that transfer times out after 3 s
/// (the process is well past its debit by then, so the timeout races the credit).
fn held(transfer: &str) -> bool {
    transfer.starts_with('h')
        || transfer
            .strip_prefix('t')
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n % 10 == 3)
}

/// Held transfers requested once the kills are over (`h0`..): the process keeps up then,
/// so the debit is seen before the timeout and the held credit lands after it, and the
/// race between a timeout and a late credit happens for sure, whatever the machine's load.
const CALM_HELD: usize = 10;

async fn torture<S, C>(store: S, read: C)
where
    S: EventStore + SnapshotStore + Clone + 'static,
    C: CheckpointStore + ProcessStore,
{
    let total = open_accounts(store.clone()).await;
    let dispatcher = Accounts::new(store.clone())
        .hold_credits(Arc::new(|t: &str| {
            held(t).then_some(Duration::from_secs(5))
        }))
        .lose_replies(7);
    let engine = ProjectionEngine::new(store.clone(), read.clone())
        .with_options(
            EngineOptions::default()
                .batch_size(50)
                .idle_wait(Duration::from_millis(20))
                .lease_retry(Duration::from_millis(20))
                .restart_backoff(Duration::from_millis(20)),
        )
        .subscribe(
            ProcessRuntime::<Transfer, _, _, _>::new(store.clone(), read.clone(), dispatcher)
                // A killed worker's claimed timers fire again after this.
                .timer_claim(Duration::from_secs(1))
                .on_failure(
                    RetryPolicy {
                        attempts: 30,
                        backoff: Duration::from_millis(1),
                        max_backoff: Duration::from_millis(10),
                    },
                    FailurePolicy::Halt,
                ),
        );
    let kills = kills().max(1);
    let per_round = TRANSFERS.div_ceil(kills);
    let mut sent = 0;
    for _ in 0..kills {
        let running = engine.start();
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..per_round.min(TRANSFERS - sent) {
            let id = format!("t{sent}");
            let from = fastrand::usize(0..ACCOUNTS);
            let to = match fastrand::u8(0..20) {
                0 => format!("ghost{sent}"),
                _ => format!(
                    "a{}",
                    (from + 1 + fastrand::usize(0..ACCOUNTS - 1)) % ACCOUNTS
                ),
            };
            let from = format!("a{from}");
            let timeout = if held(&id) {
                Duration::from_secs(3)
            } else {
                Duration::from_secs(600)
            };
            let request = RequestTransfer {
                from,
                to,
                amount: 1 + fastrand::i64(0..300),
                timeout,
            };
            let store = store.clone();
            // Concurrent requests, as concurrent clients send them.
            requests.spawn(async move { transfer::request(store, &id, request).await });
            sent += 1;
        }
        while let Some(done) = requests.join_next().await {
            done.expect("task").expect("request");
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(5..80))).await;
        running.abort().await;
    }

    // Let it settle: the process's commands and held credits append more events.
    let running = engine.start();
    let head = store.head().await.expect("head");
    running
        .wait_until_caught_up(head, WAIT)
        .await
        .expect("caught up");
    for h in 0..CALM_HELD {
        let request = RequestTransfer {
            from: format!("a{}", 2 * h),
            to: format!("a{}", 2 * h + 1),
            amount: 1,
            timeout: Duration::from_secs(3),
        };
        transfer::request(store.clone(), &format!("h{h}"), request)
            .await
            .expect("request");
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let head = store.head().await.expect("head");
        running
            .wait_until_caught_up(head, WAIT)
            .await
            .expect("caught up");
        let (open, timers) = read
            .process_counts(transfer::PROCESS)
            .await
            .expect("counts");
        tokio::time::sleep(Duration::from_millis(400)).await;
        if open == 0 && timers == 0 && store.head().await.expect("head") == head {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never settled: {open} open, {timers} timers"
        );
    }
    let status = running.status().await.expect("status");
    running.shutdown().await;
    assert_eq!(
        status[0].details.get("open_instances"),
        Some(&0),
        "{status:?}"
    );

    check(&store, total).await;
}

/// Per transfer: what its request asked, what the accounts did, how the process ended.
#[derive(Debug, Default)]
struct Seen {
    from: String,
    to: String,
    amount: i64,
    legs: HashMap<&'static str, usize>,
    net: HashMap<String, i64>,
    ends: Vec<String>,
}

async fn check<S: EventStore>(store: &S, total: i64) {
    let mut seen = HashMap::<String, Seen>::new();
    let mut balances = 0;
    let mut after = Position::START;
    loop {
        let page = store
            .read_all(ReadAll::after(after).limit(2_000))
            .await
            .expect("read");
        let Some(last) = page.last() else { break };
        after = last.position;
        for raw in &page {
            let payload: serde_json::Value =
                serde_json::from_slice(&raw.payload).unwrap_or_default();
            if let Some(id) = raw.stream_id.strip_prefix("transfer-") {
                let s = seen.entry(id.to_owned()).or_default();
                s.from = payload["from"].as_str().unwrap_or_default().to_owned();
                s.to = payload["to"].as_str().unwrap_or_default().to_owned();
                s.amount = payload["amount"].as_i64().unwrap_or_default();
            } else if let Some(id) = raw.stream_id.strip_prefix("transfer_saga-") {
                let end = match raw.event_type.as_str() {
                    "transfer-completed" => "completed",
                    "transfer-debit-refused" => "refused",
                    "transfer-abandoned" => "abandoned",
                    "transfer-compensated" => "compensated",
                    _ => continue,
                };
                seen.entry(id.to_owned())
                    .or_default()
                    .ends
                    .push(end.to_owned());
            } else if let Some(account) = raw.stream_id.strip_prefix("account-") {
                let amount = payload["amount"].as_i64().unwrap_or_default();
                let (leg, change) = match raw.event_type.as_str() {
                    "money-deposited" => {
                        balances += amount;
                        continue;
                    }
                    "transfer-debited" => ("debit", -amount),
                    "transfer-credited" => ("credit", amount),
                    "transfer-refunded" => ("refund", amount),
                    "transfer-reversed" => ("reversal", -amount),
                    _ => continue,
                };
                balances += change;
                let id = payload["transfer"]
                    .as_str()
                    .expect("transfer id")
                    .to_owned();
                let s = seen.entry(id).or_default();
                *s.legs.entry(leg).or_default() += 1;
                *s.net.entry(account.to_owned()).or_default() += change;
            }
        }
    }
    let unbalanced: Vec<_> = seen
        .iter()
        .filter(|(_, s)| s.net.values().sum::<i64>() != 0)
        .collect();
    assert!(
        unbalanced.is_empty(),
        "money created or lost by {unbalanced:?}"
    );
    assert_eq!(balances, total, "money was created or lost");
    assert_eq!(seen.len(), TRANSFERS + CALM_HELD);
    let mut endings = HashMap::<String, usize>::new();
    let mut reversed = 0;
    for (id, s) in &seen {
        assert!(
            s.legs.values().all(|n| *n <= 1),
            "{id}: a leg applied twice: {s:?}"
        );
        assert_eq!(
            s.net.values().sum::<i64>(),
            0,
            "{id}: money created or lost: {s:?}"
        );
        // An abandoned transfer whose debit landed late is compensated after it.
        let end = match s.ends.as_slice() {
            [one] => one.clone(),
            [first, second] if first == "abandoned" && second == "compensated" => second.clone(),
            other => panic!("{id}: ended {other:?}: {s:?}"),
        };
        let moved = |account: &str| s.net.get(account).copied().unwrap_or_default();
        if end == "completed" {
            assert_eq!(
                (moved(&s.from), moved(&s.to)),
                (-s.amount, s.amount),
                "{id}: {s:?}"
            );
        } else {
            assert_eq!(
                (moved(&s.from), moved(&s.to)),
                (0, 0),
                "{id}: {end} yet money moved: {s:?}"
            );
        }
        reversed += s.legs.get("reversal").copied().unwrap_or_default();
        *endings.entry(end).or_default() += 1;
    }
    for end in ["completed", "refused", "compensated"] {
        assert!(
            endings.get(end).is_some_and(|n| *n > 0),
            "no transfer was {end}: {endings:?}"
        );
    }
    let held: Vec<_> = seen.iter().filter(|(id, _)| held(id)).collect();
    assert!(
        reversed > 0,
        "no late credit raced a timeout: {endings:?}; held: {held:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_on_memory_survive_kills_timeouts_and_late_credits() {
    torture(MemoryEventStore::new(), MemoryCheckpoints::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_on_postgres_survive_kills_timeouts_and_late_credits() {
    let db = TestDatabase::new().await;
    torture(db.store().clone(), PgCheckpoints::new(db.store())).await;
    db.drop_database().await;
}
