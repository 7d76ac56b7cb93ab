use annals_core::{EventStore, ExecuteError, Position, Repository, SnapshotStore};
use anyhow::Context;

use crate::{balances::BalanceRow, AccountCommand, BankAccount};

/// Whole euros in cents.
fn eur(units: i64) -> i64 {
    units * 100
}

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, (cents % 100).abs())
}

/// Runs the bank scenario on `store`: opens two accounts, moves money, shows a rejected
/// withdrawal, reloads an account from its events and prints its stream.
///
/// Account ids carry `run_id`, so the scenario can run again on a store that keeps data.
/// Returns the position of the last event it appended (for the read side to catch up to).
///
/// # Errors
///
/// Any store error, or a command rejected where the scenario expects success.
pub async fn run_scenario<S>(store: S, run_id: &str) -> anyhow::Result<Position>
where
    S: EventStore + SnapshotStore,
{
    let accounts = Repository::<BankAccount, _>::new(store);
    let ada = format!("ada-{run_id}");
    let bob = format!("bob-{run_id}");

    println!("== opening accounts {ada} and {bob}");
    for (id, owner) in [(&ada, "Ada Lovelace"), (&bob, "Bob Babbage")] {
        let open = AccountCommand::Open {
            owner: owner.into(),
            currency: "EUR".into(),
        };
        accounts
            .execute(id, open)
            .await
            .with_context(|| format!("opening {id}"))?;
    }

    let mut last = Position::START;
    println!("== moving money");
    let steps = [
        (&ada, AccountCommand::Deposit { amount: eur(100) }),
        (&ada, AccountCommand::Withdraw { amount: eur(30) }),
        (&bob, AccountCommand::Deposit { amount: eur(30) }),
        (&bob, AccountCommand::Deposit { amount: 1_250 }),
    ];
    for (id, command) in steps {
        let label = format!("{command:?}");
        let done = accounts
            .execute(id, command)
            .await
            .with_context(|| format!("{label} on {id}"))?;
        last = done.position.unwrap_or(last);
        println!(
            "   {id:<14} {label:<30} -> balance {:>7} (version {})",
            money(done.state.balance),
            done.version
        );
    }

    println!("== a withdrawal the bank refuses");
    match accounts
        .execute(&bob, AccountCommand::Withdraw { amount: eur(500) })
        .await
    {
        Err(ExecuteError::Rejected(reason)) => println!("   {bob}: rejected: {reason}"),
        Ok(done) => anyhow::bail!("the overdraft was accepted: {done:?}"),
        Err(other) => return Err(other).context("withdrawing from bob"),
    }

    println!("== reloading {ada} from its events");
    let loaded = accounts.load(&ada).await.context("loading ada")?;
    println!(
        "   owner {:?}, {} {}, status {:?}, version {}",
        loaded.state.owner,
        money(loaded.state.balance),
        loaded.state.currency,
        loaded.state.status,
        loaded.version
    );
    anyhow::ensure!(
        loaded.state.balance == eur(70),
        "ada's balance should be 70.00"
    );

    println!(
        "== the stream {}",
        Repository::<BankAccount, S>::stream_id(&ada)
    );
    for event in accounts
        .events(&ada)
        .await
        .context("reading ada's stream")?
    {
        println!(
            "   v{} @{:<8} {:<16} {:?}",
            event.stream_version,
            event.position.to_string(),
            event.event_type,
            event.payload
        );
    }
    Ok(last)
}

/// Prints the `account_balances` read model rows.
pub fn print_balances(rows: impl IntoIterator<Item = (String, BalanceRow)>) {
    println!("== the account_balances read model (kept by a projection)");
    for (id, row) in rows {
        println!(
            "   {id:<14} {:<13} {:>7} {} {:<6} ({} events)",
            row.owner,
            money(row.balance),
            row.currency,
            row.status,
            row.events_applied
        );
    }
}
