//! The subscription core: one machine that reads the global log in order, applies an effect
//! per batch, and moves a checkpoint, under a lease, with retries, halts, dead letters and
//! parked streams. Projections, relays and process managers are kinds of it: each says only
//! what differs (which events, and what to do with them) by implementing [`Subscriber`].
//!
//! A batch runs as: take the checkpoint's lock and check it is where the batch began
//! (fencing a stale worker), [`deliver`](Subscriber::deliver) the effect that leaves the
//! database (a publish acknowledged by the broker, commands appended idempotently),
//! [`apply`](Subscriber::apply) the effect inside the transaction (read-model writes), and
//! commit it with the new checkpoint. A crash anywhere repeats the batch: `apply` is then
//! undone with the transaction, and `deliver` must be idempotent.

mod bus;
mod meters;
mod status;
mod worker;

use std::{fmt, future::Future};

use annals_core::RecordedEvent;

use crate::{Checkpoints, FailurePolicy, HandlerError, RetryPolicy};

pub use bus::{BusProgress, BusSubscription, WorkerStatus};
pub(crate) use status::Shared;
pub use status::{SubscriptionState, SubscriptionStatus};
pub(crate) use worker::Worker;

/// Why handling events failed, as the subscription core needs to know it.
#[derive(Debug)]
pub enum Failure {
    /// The event could not be handled now: retry it per the [`RetryPolicy`], then apply
    /// the [`FailurePolicy`].
    Retry(HandlerError),
    /// The event can never be handled (it does not decode, it is over a size limit): no
    /// retries, the failure policy applies at once.
    Poison(HandlerError),
    /// Something the event is not the cause of is down (a broker, a database): the worker
    /// stops and starts again after a backoff, and the event is not counted against, not
    /// dead-lettered, not halted on.
    Unavailable(HandlerError),
}

impl Failure {
    /// The underlying error.
    pub fn error(&self) -> &HandlerError {
        match self {
            Failure::Retry(e) | Failure::Poison(e) | Failure::Unavailable(e) => e,
        }
    }
}

impl Failure {
    /// The underlying error, owned.
    pub fn into_error(self) -> HandlerError {
        match self {
            Failure::Retry(e) | Failure::Poison(e) | Failure::Unavailable(e) => e,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.error(), f)
    }
}

impl From<HandlerError> for Failure {
    fn from(error: HandlerError) -> Self {
        Failure::Retry(error)
    }
}

/// A kind of subscription: what to read, and what to do with it. The core runs the rest.
///
/// `C` is where checkpoints live (and, for projections, the read model).
pub trait Subscriber<C: Checkpoints>: Send + Sync + 'static {
    /// Persisted name: keys the checkpoint, dead letters and lease. Never derive it from a
    /// Rust type path.
    fn name(&self) -> &str;

    /// What kind of subscription this is, for status and logs (`projection`, `relay`,
    /// `process-manager`).
    fn kind(&self) -> &'static str;

    /// Event types to read, filtered by the store; `None` reads every event.
    fn event_types(&self) -> Option<Vec<String>>;

    /// Retries before [`on_failure`](Subscriber::on_failure) applies.
    fn retry(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// What to do with an event that keeps failing. Default: halt.
    fn on_failure(&self) -> FailurePolicy {
        FailurePolicy::Halt
    }

    /// Prepares what the subscription writes (tables) or connects to (a broker), in its own
    /// transaction, when a worker starts. [`Failure::Poison`] means retrying cannot fix it
    /// (credentials, configuration, missing privileges): the subscription is marked
    /// [`Failed`](SubscriptionState::Failed) and does not restart, and the CLI's `run`
    /// exits with the error. Any other failure restarts the worker after a backoff.
    /// Default: nothing.
    fn setup(&self, tx: &mut C::Tx) -> impl Future<Output = Result<(), Failure>> + Send {
        let _ = tx;
        async { Ok(()) }
    }

    /// The effect that leaves the database, done after the batch's checkpoint lock is
    /// taken and before the transaction writes anything: a publish the broker has
    /// acknowledged, commands appended. It is repeated when the batch is (a crash before the
    /// commit, a failure of `apply`), so it must be idempotent. Default: nothing.
    fn deliver(
        &self,
        events: &[RecordedEvent],
    ) -> impl Future<Output = Result<(), Failure>> + Send {
        let _ = events;
        async { Ok(()) }
    }

    /// Work the subscription does besides reading the log, run by its active worker at
    /// most every [`idle_wait`](crate::EngineOptions::idle_wait) while it holds the lease
    /// (a process manager fires its due timers here). [`Failure::Unavailable`] restarts
    /// the worker; other failures are logged and the work is tried again next time.
    /// Default: nothing.
    fn tick(&self) -> impl Future<Output = Result<(), Failure>> + Send {
        async { Ok(()) }
    }

    /// Figures `status` shows for it besides lag (a process manager's open instances and
    /// pending timers). Default: none.
    fn details(&self) -> impl Future<Output = Vec<(&'static str, u64)>> + Send {
        async { Vec::new() }
    }

    /// The effect inside the batch's transaction (read-model writes), committed with the
    /// checkpoint: exactly once. Default: nothing.
    fn apply(
        &self,
        events: &[RecordedEvent],
        tx: &mut C::Tx,
    ) -> impl Future<Output = Result<(), Failure>> + Send {
        let _ = (events, tx);
        async { Ok(()) }
    }
}
