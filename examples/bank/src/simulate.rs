use annals_core::{EventStore, Position, Repository, SnapshotStore};
use anyhow::Context;

use crate::{AccountCommand, BankAccount};

/// Issues `commands` pseudo-random deposits and withdrawals over `accounts` accounts named
/// `{prefix}-{i}` (opening them first when needed); refused withdrawals are part of the
/// load. Returns the position of the last event appended.
///
/// # Errors
///
/// Store errors.
pub async fn simulate<S>(
    store: S,
    prefix: &str,
    accounts: usize,
    commands: usize,
) -> anyhow::Result<Position>
where
    S: EventStore + SnapshotStore,
{
    let repo = Repository::<BankAccount, _>::new(store);
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d
        ^ prefix
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31) + u64::from(b));
    let mut next = move || {
        // xorshift64: deterministic load without a dependency.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut last = Position::START;
    let mut refused = 0;
    for k in 0..commands {
        let id = format!("{prefix}-{}", k % accounts.max(1));
        if k < accounts {
            let open = AccountCommand::Open {
                owner: format!("Owner {id}"),
                currency: "EUR".into(),
            };
            let done = repo.execute(&id, open).await;
            if let Ok(done) = done {
                last = done.position.unwrap_or(last);
                continue;
            }
        }
        let amount = (next() % 10_000) as i64 + 1;
        let command = if next() % 3 == 0 {
            AccountCommand::Withdraw { amount }
        } else {
            AccountCommand::Deposit { amount }
        };
        match repo.execute(&id, command).await {
            Ok(done) => last = done.position.unwrap_or(last),
            Err(annals_core::ExecuteError::Rejected(_)) => refused += 1,
            Err(e) => return Err(e).with_context(|| format!("command {k} on {id}")),
        }
    }
    println!(
        "simulated {commands} commands on {accounts} accounts ({refused} refused by the bank)"
    );
    Ok(last)
}
