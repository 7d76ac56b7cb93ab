//! The peer frameworks set up for the benchmark: a BankAccount equivalent to annals' bank
//! example, on cqrs-es (+ postgres-es) and on esrs, each with its own tables in one database.

use serde::{Deserialize, Serialize};

/// Commands, shared by both peers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Cmd {
    /// Open the account.
    Open { owner: String, currency: String },
    /// Add money.
    Deposit { amount: i64 },
    /// Take money out.
    Withdraw { amount: i64 },
}

/// Events, shared by both peers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Evt {
    /// Opened.
    Opened { owner: String, currency: String },
    /// Money came in.
    Deposited { amount: i64 },
    /// Money went out.
    Withdrawn { amount: i64 },
}

/// Why the bank said no.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    /// Opened twice.
    #[error("already open")]
    AlreadyOpen,
    /// Not opened.
    #[error("not open")]
    NotOpen,
    /// Not enough money.
    #[error("insufficient funds")]
    Insufficient,
}

/// The state both peers fold.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Account {
    /// Opened yet.
    pub opened: bool,
    /// Balance in cents.
    pub balance: i64,
}

fn decide(s: &Account, cmd: Cmd) -> Result<Evt, BankError> {
    Ok(match cmd {
        Cmd::Open { owner, currency } if !s.opened => Evt::Opened { owner, currency },
        Cmd::Open { .. } => return Err(BankError::AlreadyOpen),
        _ if !s.opened => return Err(BankError::NotOpen),
        Cmd::Deposit { amount } => Evt::Deposited { amount },
        Cmd::Withdraw { amount } if amount > s.balance => return Err(BankError::Insufficient),
        Cmd::Withdraw { amount } => Evt::Withdrawn { amount },
    })
}

fn fold(s: &mut Account, e: &Evt) {
    match e {
        Evt::Opened { .. } => s.opened = true,
        Evt::Deposited { amount } => s.balance += amount,
        Evt::Withdrawn { amount } => s.balance -= amount,
    }
}

/// cqrs-es 0.5 with postgres-es.
pub mod cqrs {
    use cqrs_es::{event_sink::EventSink, Aggregate, DomainEvent};

    use super::{decide, fold, Account, BankError, Cmd, Evt};

    impl DomainEvent for Evt {
        fn event_type(&self) -> String {
            match self {
                Evt::Opened { .. } => "Opened",
                Evt::Deposited { .. } => "Deposited",
                Evt::Withdrawn { .. } => "Withdrawn",
            }
            .into()
        }
        fn event_version(&self) -> String {
            "1.0".into()
        }
    }

    /// The cqrs-es aggregate.
    #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
    pub struct CqAccount(pub Account);

    impl Aggregate for CqAccount {
        const TYPE: &'static str = "BankAccount";
        type Command = Cmd;
        type Event = Evt;
        type Error = BankError;
        type Services = ();

        async fn handle(
            &mut self,
            cmd: Cmd,
            _: &(),
            sink: &EventSink<Self>,
        ) -> Result<(), BankError> {
            let event = decide(&self.0, cmd)?;
            sink.write(event, self).await;
            Ok(())
        }

        fn apply(&mut self, event: Evt) {
            fold(&mut self.0, &event);
        }
    }

    /// postgres-es' tables (its `db/init.sql`).
    pub const DDL: &str = "
        CREATE TABLE events (
            aggregate_type text NOT NULL, aggregate_id text NOT NULL,
            sequence bigint CHECK (sequence >= 0) NOT NULL,
            event_type text NOT NULL, event_version text NOT NULL,
            payload json NOT NULL, metadata json NOT NULL,
            PRIMARY KEY (aggregate_type, aggregate_id, sequence));
        CREATE TABLE snapshots (
            aggregate_type text NOT NULL, aggregate_id text NOT NULL,
            last_sequence bigint CHECK (last_sequence >= 0) NOT NULL,
            current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
            payload json NOT NULL,
            PRIMARY KEY (aggregate_type, aggregate_id, last_sequence));";
}

/// esrs 0.18.
pub mod es {
    use super::{decide, fold, Account, BankError, Cmd, Evt};

    /// The esrs aggregate (a marker type).
    #[derive(Debug)]
    pub struct EsAccount;

    impl esrs::Aggregate for EsAccount {
        const NAME: &'static str = "bank_account";
        type State = Account;
        type Command = Cmd;
        type Event = Evt;
        type Error = BankError;

        fn handle_command(state: &Account, cmd: Cmd) -> Result<Vec<Evt>, BankError> {
            decide(state, cmd).map(|e| vec![e])
        }

        fn apply_event(mut state: Account, event: Evt) -> Account {
            fold(&mut state, &event);
            state
        }
    }
}
