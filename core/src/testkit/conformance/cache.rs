//! The aggregate cache against a real store: repositories with caches of their own (two
//! processes) writing one stream lose no update, and a stale cache never refuses what the
//! stream allows.

use std::sync::Arc;

use super::commands::{Wallet, WalletCommand};
use crate::{EventStore, ExecuteError, ReadStream, Repository, RepositoryOptions, SnapshotStore};

/// Two repositories with caches of their own ("two processes") take deposits and
/// withdrawals on one wallet from three tasks each, more withdrawals than the deposits
/// allow. Every success has its own version, the stream holds exactly the successes'
/// events, replaying it never goes below zero, and the balance is what the successes add
/// up to. Before that, a withdrawal decided on a stale cached balance is decided again on
/// the stream instead of being refused.
pub async fn cached_repositories_lose_no_update<S>(store: S)
where
    S: EventStore + SnapshotStore + Clone + 'static,
{
    let process = || {
        Repository::<Wallet, _>::new(store.clone())
            .with_options(
                RepositoryOptions::default()
                    .snapshot_every(Some(7))
                    .max_conflict_retries(100),
            )
            .with_cache(4)
    };
    let (a, b) = (Arc::new(process()), Arc::new(process()));

    // A caches an empty wallet, B deposits, A withdraws: allowed by the stream.
    let id = super::unique("cached");
    a.execute(&id, WalletCommand::Deposit(0))
        .await
        .expect("open");
    b.execute(&id, WalletCommand::Deposit(50))
        .await
        .expect("deposit");
    let done = a
        .execute(&id, WalletCommand::Withdraw(30))
        .await
        .expect("a withdrawal the stream allows, decided on a stale cache");
    assert_eq!(done.state.balance, 20);

    let id = super::unique("cached");
    let mut tasks = Vec::new();
    for task in 0..6u64 {
        let repo = Arc::clone(if task % 2 == 0 { &a } else { &b });
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut seed = task.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut outcomes = Vec::new();
            for _ in 0..30 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let command = if seed % 3 == 0 {
                    WalletCommand::Deposit(seed % 5 + 1)
                } else {
                    WalletCommand::Withdraw(seed % 7 + 1)
                };
                match repo.execute(&id, command).await {
                    Ok(done) => outcomes.push((command, done.version)),
                    Err(ExecuteError::Rejected(_)) => {}
                    Err(e) => panic!("{command:?}: {e}"),
                }
            }
            outcomes
        }));
    }
    let mut successes = Vec::new();
    for task in tasks {
        successes.extend(task.await.expect("task"));
    }
    let mut versions: Vec<u64> = successes.iter().map(|(_, v)| *v).collect();
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(
        versions.len(),
        successes.len(),
        "two successes share a version"
    );
    let stored = store
        .read_stream(&Repository::<Wallet, S>::stream_id(&id), ReadStream::all())
        .await
        .expect("read");
    assert_eq!(
        stored.len(),
        successes.len(),
        "the stream is not the successes"
    );
    // Replaying checks every prefix: a withdrawal past the balance would underflow.
    let mut balance: i64 = 0;
    for event in &stored {
        let value: serde_json::Value = serde_json::from_slice(&event.payload).expect("json");
        let amount = value["amount"].as_i64().expect("amount");
        balance += if event.event_type.ends_with("deposited") {
            amount
        } else {
            -amount
        };
        assert!(
            balance >= 0,
            "the stream overdraws at version {}",
            event.stream_version
        );
    }
    let expected: i64 = successes
        .iter()
        .map(|(command, _)| match command {
            WalletCommand::Deposit(n) => *n as i64,
            WalletCommand::Withdraw(n) => -(*n as i64),
        })
        .sum();
    assert_eq!(
        balance, expected,
        "the stream's balance is not the successes' sum"
    );
    let loaded = a.load(&id).await.expect("load");
    assert_eq!(loaded.state.balance as i64, expected);
}
