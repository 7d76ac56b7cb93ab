//! Money transfers between accounts, as a process manager: debit the source, credit the
//! target; if the target refuses (closed, never opened, another currency), refund the
//! source; if the transfer does not complete within its timeout, give it up.
//!
//! Giving up races the steps still in flight, and the process handles what lands late:
//! - timed out before the debit was seen: nothing moved yet; a debit seen later is
//!   refunded;
//! - timed out after the debit, before the credit was seen: the source is refunded; a
//!   credit that still lands on the target is then taken back (a reversal).
//!
//! Compensations (refunds, reversals) are never refused by an account: a compensation must
//! succeed, or money would be lost. So for every transfer the money either moved once from
//! source to target, or is back where it was; never created, never lost.

use std::{sync::Arc, time::Duration};

use annals_core::{DomainEvent, Envelope, EventStore, ExecuteError, Repository, SnapshotStore};
use annals_projections::{
    DispatchError, Dispatched, Dispatcher, Input, ProcessManager, TimerChange,
};
use serde::{Deserialize, Serialize};

use crate::{AccountCommand, BankAccount, Cents};

/// The process manager's persisted name (its instances' streams are `transfer_saga-<id>`).
pub const PROCESS: &str = "transfer_saga";

/// The name of the timer that gives a transfer up.
const TIMEOUT: &str = "timeout";

/// A transfer request: the process starts from it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct TransferRequest {
    requested: bool,
}

/// Asking for a transfer.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestTransfer {
    /// Source account id.
    pub from: String,
    /// Target account id.
    pub to: String,
    /// Amount in cents.
    pub amount: Cents,
    /// Give up after this long.
    pub timeout: Duration,
}

/// A transfer was asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum RequestEvent {
    /// The request.
    #[serde(rename = "transfer-requested")]
    Requested {
        /// Source account id.
        from: String,
        /// Target account id.
        to: String,
        /// Amount in cents.
        amount: Cents,
        /// Give up after this many milliseconds.
        timeout_ms: u64,
    },
}
impl DomainEvent for RequestEvent {}

/// Why a transfer request was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A transfer is asked for once.
    #[error("transfer already requested")]
    AlreadyRequested,
    /// Source and target are the same account.
    #[error("a transfer needs two accounts")]
    SameAccount,
    /// Amounts are positive.
    #[error("amount must be positive, got {0}")]
    NonPositiveAmount(Cents),
}

impl annals_core::Aggregate for TransferRequest {
    const TYPE: &'static str = "transfer";
    type Command = RequestTransfer;
    type Event = RequestEvent;
    type Error = RequestError;

    fn handle(&self, r: RequestTransfer) -> Result<Vec<RequestEvent>, RequestError> {
        if self.requested {
            return Err(RequestError::AlreadyRequested);
        }
        if r.from == r.to {
            return Err(RequestError::SameAccount);
        }
        if r.amount <= 0 {
            return Err(RequestError::NonPositiveAmount(r.amount));
        }
        Ok(vec![RequestEvent::Requested {
            from: r.from,
            to: r.to,
            amount: r.amount,
            timeout_ms: u64::try_from(r.timeout.as_millis()).unwrap_or(u64::MAX),
        }])
    }

    fn apply(&mut self, _: &RequestEvent) {
        self.requested = true;
    }
}

/// Asks for a transfer `id` (once: asking again with the same id is answered as before).
///
/// # Errors
///
/// Store errors.
pub async fn request<S>(store: S, id: &str, request: RequestTransfer) -> anyhow::Result<()>
where
    S: EventStore + SnapshotStore,
{
    let command_id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("transfer/{id}").as_bytes(),
    );
    Repository::<TransferRequest, _>::new(store)
        .execute_once(id, command_id, request)
        .await?;
    Ok(())
}

/// What the transfer process reacts to: requests, and the accounts' transfer legs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Observed {
    /// A transfer was asked for.
    #[serde(rename = "transfer-requested")]
    Requested {
        /// Source.
        from: String,
        /// Target.
        to: String,
        /// Amount.
        amount: Cents,
        /// Timeout.
        timeout_ms: u64,
    },
    /// An account was debited for a transfer.
    #[serde(rename = "transfer-debited")]
    Debited {
        /// The transfer.
        transfer: String,
        /// Amount.
        amount: Cents,
        /// The account's currency.
        currency: String,
    },
    /// An account was credited for a transfer.
    #[serde(rename = "transfer-credited")]
    Credited {
        /// The transfer.
        transfer: String,
        /// Amount.
        amount: Cents,
    },
    /// A debit was given back.
    #[serde(rename = "transfer-refunded")]
    Refunded {
        /// The transfer.
        transfer: String,
        /// Amount.
        amount: Cents,
    },
    /// A late credit was taken back.
    #[serde(rename = "transfer-reversed")]
    Reversed {
        /// The transfer.
        transfer: String,
        /// Amount.
        amount: Cents,
    },
}
impl DomainEvent for Observed {}

/// The transfer's decisions, recorded in its stream. Each carries what its commands need.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[allow(missing_docs)]
pub enum TransferEvent {
    /// Debit the source; give up after the timeout.
    #[serde(rename = "transfer-started")]
    Started {
        transfer: String,
        from: String,
        to: String,
        amount: Cents,
        timeout_ms: u64,
    },
    /// The source was debited: credit the target.
    #[serde(rename = "transfer-debit-seen")]
    DebitSeen {
        transfer: String,
        to: String,
        amount: Cents,
        currency: String,
    },
    /// The target was credited: done.
    #[serde(rename = "transfer-completed")]
    Completed,
    /// The source refused the debit: nothing moved.
    #[serde(rename = "transfer-debit-refused")]
    DebitRefused { reason: String },
    /// The target refused the credit: refund the source.
    #[serde(rename = "transfer-credit-refused")]
    CreditRefused {
        transfer: String,
        from: String,
        amount: Cents,
        reason: String,
    },
    /// Timed out before the debit was seen: nothing moved (a late debit is refunded).
    #[serde(rename = "transfer-abandoned")]
    Abandoned,
    /// A debit landed after the transfer was abandoned: refund it.
    #[serde(rename = "transfer-late-debit")]
    LateDebit {
        transfer: String,
        from: String,
        amount: Cents,
    },
    /// Timed out after the debit, before the credit was seen: refund the source (a credit
    /// that still lands is reversed).
    #[serde(rename = "transfer-timed-out")]
    TimedOut {
        transfer: String,
        from: String,
        amount: Cents,
    },
    /// The refund landed: the transfer is compensated.
    #[serde(rename = "transfer-compensated")]
    Compensated,
    /// A credit landed after the transfer timed out: take it back.
    #[serde(rename = "transfer-late-credit")]
    LateCredit {
        transfer: String,
        to: String,
        amount: Cents,
    },
    /// The late credit was taken back.
    #[serde(rename = "transfer-reversal-seen")]
    ReversalDone,
}
impl DomainEvent for TransferEvent {}

/// Where a transfer stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Not requested yet.
    #[default]
    New,
    /// Waiting for the debit.
    Debiting,
    /// Waiting for the credit.
    Crediting,
    /// Waiting for the refund.
    Refunding,
    /// Money moved.
    Completed,
    /// The debit was refused; nothing moved.
    Refused,
    /// Given up before anything moved.
    Abandoned,
    /// Money moved back.
    Compensated,
}

/// A transfer's state: the fold of its decisions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Where it stands.
    pub stage: Stage,
    id: String,
    from: String,
    to: String,
    amount: Cents,
    /// Timed out after the debit: a credit that lands is reversed.
    reverse_late_credit: bool,
    /// A reversal was sent and not seen yet.
    reversing: bool,
}

fn account(stream_id: &str) -> &str {
    stream_id.strip_prefix("account-").unwrap_or(stream_id)
}

impl ProcessManager for Transfer {
    const TYPE: &'static str = PROCESS;
    type Observed = Observed;
    type Event = TransferEvent;
    type Command = (String, AccountCommand);

    fn instance(event: &Envelope<Observed>) -> Option<String> {
        match &event.payload {
            Observed::Requested { .. } => {
                event.stream_id.strip_prefix("transfer-").map(str::to_owned)
            }
            Observed::Debited { transfer, .. }
            | Observed::Credited { transfer, .. }
            | Observed::Refunded { transfer, .. }
            | Observed::Reversed { transfer, .. } => Some(transfer.clone()),
        }
    }

    fn decide(&self, input: &Input<Observed, Self::Command>) -> Vec<TransferEvent> {
        use TransferEvent as T;
        let (transfer, from, to, amount) = (
            self.id.clone(),
            self.from.clone(),
            self.to.clone(),
            self.amount,
        );
        let on_from = |e: &Envelope<Observed>| account(&e.stream_id) == self.from;
        let on_to = |e: &Envelope<Observed>| account(&e.stream_id) == self.to;
        match (self.stage, input) {
            (Stage::New, Input::Event(e)) => match &e.payload {
                Observed::Requested {
                    from,
                    to,
                    amount,
                    timeout_ms,
                } => vec![T::Started {
                    transfer: e
                        .stream_id
                        .strip_prefix("transfer-")
                        .unwrap_or_default()
                        .to_owned(),
                    from: from.clone(),
                    to: to.clone(),
                    amount: *amount,
                    timeout_ms: *timeout_ms,
                }],
                _ => vec![],
            },
            (Stage::Debiting, Input::Event(e)) if on_from(e) => match &e.payload {
                Observed::Debited { currency, .. } => vec![T::DebitSeen {
                    transfer,
                    to,
                    amount,
                    currency: currency.clone(),
                }],
                _ => vec![],
            },
            (
                Stage::Debiting,
                Input::Rejected {
                    command: (_, AccountCommand::TransferDebit { .. }),
                    reason,
                },
            ) => {
                vec![T::DebitRefused {
                    reason: reason.clone(),
                }]
            }
            (Stage::Debiting, Input::Timer { .. }) => vec![T::Abandoned],
            (Stage::Abandoned, Input::Event(e))
                if on_from(e) && matches!(e.payload, Observed::Debited { .. }) =>
            {
                vec![T::LateDebit {
                    transfer,
                    from,
                    amount,
                }]
            }
            (Stage::Crediting, Input::Event(e))
                if on_to(e) && matches!(e.payload, Observed::Credited { .. }) =>
            {
                vec![T::Completed]
            }
            (
                Stage::Crediting,
                Input::Rejected {
                    command: (target, AccountCommand::TransferCredit { .. }),
                    reason,
                },
            ) if *target == to => {
                vec![T::CreditRefused {
                    transfer,
                    from,
                    amount,
                    reason: reason.clone(),
                }]
            }
            (Stage::Crediting, Input::Timer { .. }) => vec![T::TimedOut {
                transfer,
                from,
                amount,
            }],
            (Stage::Refunding, Input::Event(e))
                if on_from(e) && matches!(e.payload, Observed::Refunded { .. }) =>
            {
                vec![T::Compensated]
            }
            (Stage::Refunding | Stage::Compensated, Input::Event(e))
                if self.reverse_late_credit
                    && !self.reversing
                    && on_to(e)
                    && matches!(e.payload, Observed::Credited { .. }) =>
            {
                vec![T::LateCredit {
                    transfer,
                    to,
                    amount,
                }]
            }
            (_, Input::Event(e))
                if self.reversing && on_to(e) && matches!(e.payload, Observed::Reversed { .. }) =>
            {
                vec![T::ReversalDone]
            }
            _ => vec![],
        }
    }

    fn apply(&mut self, decision: &TransferEvent) {
        use TransferEvent as T;
        match decision {
            T::Started {
                transfer,
                from,
                to,
                amount,
                ..
            } => {
                self.stage = Stage::Debiting;
                self.id.clone_from(transfer);
                (self.from, self.to, self.amount) = (from.clone(), to.clone(), *amount);
            }
            T::DebitSeen { .. } => self.stage = Stage::Crediting,
            T::Completed => self.stage = Stage::Completed,
            T::DebitRefused { .. } => self.stage = Stage::Refused,
            T::CreditRefused { .. } | T::LateDebit { .. } => self.stage = Stage::Refunding,
            T::Abandoned => self.stage = Stage::Abandoned,
            T::TimedOut { .. } => {
                self.stage = Stage::Refunding;
                self.reverse_late_credit = true;
            }
            T::Compensated => self.stage = Stage::Compensated,
            T::LateCredit { .. } => self.reversing = true,
            T::ReversalDone => {
                self.reversing = false;
                self.reverse_late_credit = false;
            }
        }
    }

    fn commands(decision: &TransferEvent) -> Vec<Self::Command> {
        use TransferEvent as T;
        match decision {
            T::Started {
                transfer,
                from,
                amount,
                ..
            } => vec![(
                from.clone(),
                AccountCommand::TransferDebit {
                    transfer: transfer.clone(),
                    amount: *amount,
                },
            )],
            T::DebitSeen {
                transfer,
                to,
                amount,
                currency,
            } => vec![(
                to.clone(),
                AccountCommand::TransferCredit {
                    transfer: transfer.clone(),
                    amount: *amount,
                    currency: currency.clone(),
                },
            )],
            T::CreditRefused {
                transfer,
                from,
                amount,
                ..
            }
            | T::LateDebit {
                transfer,
                from,
                amount,
            }
            | T::TimedOut {
                transfer,
                from,
                amount,
            } => vec![(
                from.clone(),
                AccountCommand::TransferRefund {
                    transfer: transfer.clone(),
                    amount: *amount,
                },
            )],
            T::LateCredit {
                transfer,
                to,
                amount,
            } => vec![(
                to.clone(),
                AccountCommand::TransferReverse {
                    transfer: transfer.clone(),
                    amount: *amount,
                },
            )],
            _ => vec![],
        }
    }

    fn timers(decision: &TransferEvent) -> Vec<TimerChange> {
        use TransferEvent as T;
        match decision {
            T::Started { timeout_ms, .. } => vec![TimerChange::Set {
                name: TIMEOUT.to_owned(),
                after: Duration::from_millis(*timeout_ms),
            }],
            T::Completed | T::DebitRefused { .. } | T::CreditRefused { .. } => {
                vec![TimerChange::Cancel {
                    name: TIMEOUT.to_owned(),
                }]
            }
            _ => vec![],
        }
    }

    fn is_finished(&self) -> bool {
        !self.reversing
            && matches!(
                self.stage,
                Stage::Completed | Stage::Refused | Stage::Abandoned | Stage::Compensated
            )
    }
}

/// How long to hold a transfer's credit before applying it (a test hook: a slow network,
/// a queue); `None` applies it at once.
pub type HoldCredit = Arc<dyn Fn(&str) -> Option<Duration> + Send + Sync>;

/// Sends the transfer's commands to accounts, each once (by its command id).
pub struct Accounts<S> {
    accounts: Repository<BankAccount, S>,
    hold_credit: Option<HoldCredit>,
    lose_one_reply_in: u32,
}

impl<S> std::fmt::Debug for Accounts<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("holds_credits", &self.hold_credit.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: EventStore + SnapshotStore> Accounts<S> {
    /// Commands go to the accounts in `store`.
    pub fn new(store: S) -> Self {
        Self {
            accounts: Repository::new(store),
            hold_credit: None,
            lose_one_reply_in: 0,
        }
    }

    /// Fault injection for tests: one applied command in `n` reports a failure, as a
    /// crash after the account's commit would (the runtime dispatches it again).
    #[must_use]
    pub fn lose_replies(mut self, one_in: u32) -> Self {
        self.lose_one_reply_in = one_in;
        self
    }

    /// Holds some credits back (see [`HoldCredit`]): they are applied later, in the
    /// background, and the dispatch returns at once, as with an asynchronous command bus.
    #[must_use]
    pub fn hold_credits(mut self, hold: HoldCredit) -> Self {
        self.hold_credit = Some(hold);
        self
    }
}

async fn apply<S: EventStore + SnapshotStore>(
    accounts: &Repository<BankAccount, S>,
    id: &str,
    command_id: uuid::Uuid,
    command: AccountCommand,
) -> Result<(), DispatchError> {
    match accounts.execute_once(id, command_id, command).await {
        Ok(_) => Ok(()),
        Err(ExecuteError::Rejected(refused)) => Err(DispatchError::Rejected(refused.to_string())),
        Err(other) => Err(DispatchError::Failed(other.into())),
    }
}

impl<S> Dispatcher<(String, AccountCommand)> for Accounts<S>
where
    S: EventStore + SnapshotStore + Clone + 'static,
{
    async fn dispatch(&self, d: Dispatched<(String, AccountCommand)>) -> Result<(), DispatchError> {
        let (id, command) = d.command;
        if let AccountCommand::TransferCredit { transfer, .. } = &command {
            if let Some(hold) = self.hold_credit.as_ref().and_then(|h| h(transfer)) {
                let accounts = self.accounts.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(hold).await;
                    // A refusal here is not reported: the transfer times out and refunds.
                    let _ = apply(&accounts, &id, d.command_id, command).await;
                });
                return Ok(());
            }
        }
        apply(&self.accounts, &id, d.command_id, command).await?;
        if self.lose_one_reply_in > 0 && fastrand::u32(0..self.lose_one_reply_in) == 0 {
            return Err(DispatchError::Failed(
                "the reply was lost (fault injection)".into(),
            ));
        }
        Ok(())
    }
}

/// The scenario's transfers: one that completes, and one to a closed account that is
/// compensated (its debit refunded). Needs a running engine with the transfer process
/// registered; returns the log's head once both have ended.
///
/// # Errors
///
/// Store errors, or a transfer that does not end within 30 seconds.
pub async fn demo<S>(store: S, run_id: &str) -> anyhow::Result<annals_core::Position>
where
    S: EventStore + SnapshotStore + Clone,
{
    let accounts = Repository::<BankAccount, _>::new(store.clone());
    let (ada, bob, carol) = (
        format!("ada-{run_id}"),
        format!("bob-{run_id}"),
        format!("carol-{run_id}"),
    );
    println!("== transfers, run by a process manager (debit, credit; refund if refused)");
    let open = AccountCommand::Open {
        owner: "Carol Closed".into(),
        currency: "EUR".into(),
    };
    accounts.execute(&carol, open).await?;
    accounts.execute(&carol, AccountCommand::Close).await?;
    let transfers = [
        (format!("ok-{run_id}"), &bob, 2_000),
        (format!("refused-{run_id}"), &carol, 1_500),
    ];
    for (id, to, amount) in &transfers {
        let asked = RequestTransfer {
            from: ada.clone(),
            to: (*to).clone(),
            amount: *amount,
            timeout: Duration::from_secs(30),
        };
        request(store.clone(), id, asked).await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for (id, to, amount) in &transfers {
        let stream = format!("{PROCESS}-{id}");
        let ended = loop {
            let decisions = store
                .read_stream(&stream, annals_core::ReadStream::all())
                .await?;
            let end = decisions.iter().find_map(|d| match d.event_type.as_str() {
                "transfer-completed" => Some("completed"),
                "transfer-compensated" => Some("compensated (the debit was refunded)"),
                "transfer-debit-refused" => Some("refused at the debit"),
                _ => None,
            });
            if let Some(end) = end {
                break (end, decisions);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "transfer {id} did not end"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let (end, decisions) = ended;
        println!(
            "   {ada} -> {to}: {}.{:02} EUR: {end}",
            amount / 100,
            amount % 100
        );
        for d in decisions {
            println!("      v{} {}", d.stream_version, d.event_type);
        }
    }
    Ok(store.head().await?)
}

#[cfg(test)]
mod tests;
