//! Commands with ids through a [`Repository`](crate::Repository): each is applied once per
//! stream, a repeat (a retry after a lost reply, concurrent attempts) is answered with the
//! recorded outcome, and the command id is the events' causation id.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    command_event_id, Aggregate, DomainEvent, Error, EventStore, ExecuteError, ReadStream,
    Repository, RepositoryOptions, SnapshotStore,
};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(super) struct Wallet {
    pub(super) balance: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) enum WalletEvent {
    #[serde(rename = "conformance-deposited")]
    Deposited { amount: u64 },
    #[serde(rename = "conformance-withdrawn")]
    Withdrawn { amount: u64 },
}
impl DomainEvent for WalletEvent {}

#[derive(Debug, Clone, Copy)]
pub(super) enum WalletCommand {
    Deposit(u64),
    Withdraw(u64),
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("insufficient funds")]
pub(super) struct InsufficientFunds;

impl Aggregate for Wallet {
    const TYPE: &'static str = "conformance_wallet";
    type Command = WalletCommand;
    type Event = WalletEvent;
    type Error = InsufficientFunds;

    fn handle(&self, command: WalletCommand) -> Result<Vec<WalletEvent>, InsufficientFunds> {
        match command {
            WalletCommand::Deposit(amount) => Ok(vec![WalletEvent::Deposited { amount }]),
            WalletCommand::Withdraw(amount) if amount > self.balance => Err(InsufficientFunds),
            WalletCommand::Withdraw(amount) => Ok(vec![WalletEvent::Withdrawn { amount }]),
        }
    }

    fn apply(&mut self, event: &WalletEvent) {
        match event {
            WalletEvent::Deposited { amount } => self.balance += amount,
            WalletEvent::Withdrawn { amount } => self.balance -= amount,
        }
    }
}

/// A retried command is not applied twice nor rejected by the state its first attempt
/// made; concurrent attempts of one command append once; a rejected command leaves no
/// trace; one command id cannot be applied to two streams.
pub async fn commands_with_ids_apply_once<S>(store: S)
where
    S: EventStore + SnapshotStore + Clone + 'static,
{
    let wallets = Arc::new(
        Repository::<Wallet, _>::new(store.clone())
            .with_options(RepositoryOptions::default().max_conflict_retries(50)),
    );
    let id = super::unique("w");
    let deposit = Uuid::now_v7();
    wallets
        .execute_once(&id, deposit, WalletCommand::Deposit(100))
        .await
        .expect("deposit");

    // The reply to a withdrawal is lost and the client retries: the retry is answered with
    // the first outcome, not run against the debited balance (which would reject it, or
    // debit twice).
    let withdraw = Uuid::now_v7();
    let first = wallets
        .execute_once(&id, withdraw, WalletCommand::Withdraw(80))
        .await
        .expect("withdraw");
    let again = wallets
        .execute_once(&id, withdraw, WalletCommand::Withdraw(80))
        .await
        .expect("a retried withdrawal is not rejected");
    assert!(!first.repeated && again.repeated);
    assert_eq!(
        (again.version, again.position, &again.events),
        (first.version, first.position, &first.events),
        "the repeat's outcome differs from the first"
    );
    assert_eq!(
        again.state.balance, 20,
        "a retried withdrawal debited twice"
    );

    // Its event: id derived from the command id, causation = the command.
    let stream = Repository::<Wallet, S>::stream_id(&id);
    let stored = store
        .read_stream(&stream, ReadStream::all())
        .await
        .expect("read");
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].event_id, command_event_id(withdraw, 0));
    assert_eq!(stored[1].metadata.causation_id, Some(withdraw));
    assert_eq!(stored[1].metadata.correlation_id, Some(withdraw));

    // Concurrent attempts of one command: applied once, every caller told the same.
    let concurrent = Uuid::now_v7();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (wallets, id) = (Arc::clone(&wallets), id.clone());
        tasks.spawn(async move {
            wallets
                .execute_once(&id, concurrent, WalletCommand::Withdraw(5))
                .await
                .map(|done| (done.version, done.position))
        });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        outcomes.push(joined.expect("task").expect("concurrent attempt"));
    }
    outcomes.dedup();
    assert_eq!(outcomes.len(), 1, "attempts were told different outcomes");
    let loaded = wallets.load(&id).await.expect("load");
    assert_eq!(
        (loaded.state.balance, loaded.version),
        (15, 3),
        "concurrent attempts of one command applied it more than once"
    );

    // A rejection leaves no trace: the same command decides again later.
    let big = Uuid::now_v7();
    let rejected = wallets
        .execute_once(&id, big, WalletCommand::Withdraw(50))
        .await;
    assert!(matches!(
        rejected,
        Err(ExecuteError::Rejected(InsufficientFunds))
    ));
    wallets
        .execute_once(&id, Uuid::now_v7(), WalletCommand::Deposit(100))
        .await
        .expect("deposit");
    let later = wallets
        .execute_once(&id, big, WalletCommand::Withdraw(50))
        .await
        .expect("decided again after the deposit");
    assert!(!later.repeated && later.state.balance == 65);

    // A creating command appends without reading; on an existing stream it decides on
    // the real state (here: a withdrawal a new wallet would refuse).
    let fresh = super::unique("w");
    let created = wallets
        .create(&fresh, WalletCommand::Deposit(5))
        .await
        .expect("create");
    assert_eq!((created.version, created.state.balance), (1, 5));
    let existing = wallets
        .create(&fresh, WalletCommand::Withdraw(3))
        .await
        .expect("create on an existing stream decides on its state");
    assert_eq!((existing.version, existing.state.balance), (2, 2));

    // One command id, another aggregate: its event ids are taken; a typed error, no write.
    let other = super::unique("w");
    let refused = wallets
        .execute_once(&other, withdraw, WalletCommand::Deposit(1))
        .await;
    assert!(
        matches!(
            refused,
            Err(ExecuteError::Store(Error::DuplicateEvent { .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(wallets.load(&other).await.expect("load").version, 0);
}
