//! Subscriptions that read a message bus instead of the log (an inbox consumer): they run
//! their own loop (several processes share one bus consumer, so there is no lease and no
//! global checkpoint) and share the rest with the log's subscriptions: retry and failure
//! policies, dead letters with parking, status, and the operations CLI.

use std::{future::Future, sync::Arc};

use annals_core::Position;
use tokio_util::sync::CancellationToken;

use super::{Shared, SubscriptionState};
use crate::{DeadLetter, DeadLetters, EngineOptions, FailurePolicy, Result};

/// Where a bus subscription stands, for status: positions on the bus (its stream
/// sequences, as `Position::new(0, sequence)`), and what is left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusProgress {
    /// Everything up to here is acknowledged.
    pub acknowledged: Position,
    /// The newest message on the bus for this subscription.
    pub head: Position,
    /// Messages not yet delivered plus delivered but not acknowledged.
    pub pending: u64,
    /// Whether some process is pulling right now.
    pub active: bool,
}

/// What a running bus subscription reports about itself (its state, its rate), read by
/// [`RunningProjections::status`](crate::RunningProjections::status) and waiters.
#[derive(Clone, Debug)]
pub struct WorkerStatus(pub(crate) Arc<Shared>);

impl WorkerStatus {
    /// Publishes the state (and the error of a halt or failure).
    pub fn set_state(&self, state: SubscriptionState, error: Option<String>) {
        self.0.set_state(state, error);
    }

    /// Counts `events` handled, for the rate in status.
    pub fn handled(&self, events: usize) {
        self.0.processed(events);
    }

    /// Publishes how far it got (waiters compare it with the position they wait for).
    pub fn set_checkpoint(&self, at: Position) {
        self.0.checkpoint.send_replace(at);
    }
}

/// A subscription that reads a message bus: registered with
/// [`ProjectionEngine::consume`](crate::ProjectionEngine::consume), run by its own
/// [`run`](BusSubscription::run) loop. `C` is where its dead letters (and its handler's
/// writes) live.
pub trait BusSubscription<C: DeadLetters>: Send + Sync + 'static {
    /// Persisted name: keys the bus consumer, the inbox and the dead letters.
    fn name(&self) -> &str;

    /// For status and logs. Default `consumer`.
    fn kind(&self) -> &'static str {
        "consumer"
    }

    /// What happens to a message that keeps failing.
    fn on_failure(&self) -> FailurePolicy;

    /// Runs until `token` is cancelled (or the subscription halts or fails), reporting
    /// through `status`. Several processes may run it at once.
    fn run(
        self: Arc<Self>,
        checkpoints: C,
        options: EngineOptions,
        status: WorkerStatus,
        token: CancellationToken,
    ) -> impl Future<Output = ()> + Send;

    /// Applies a dead-lettered message again from the letter's stored
    /// [`message`](DeadLetter::message), removing the letter in the same transaction.
    ///
    /// # Errors
    ///
    /// When it fails again (the letter stays), or the store fails.
    fn retry(&self, checkpoints: &C, letter: DeadLetter)
        -> impl Future<Output = Result<()>> + Send;

    /// Applies the letters parked behind a discarded or retried letter of `stream_id`, in
    /// stream order, until none is left or one fails (which becomes the stream's head
    /// letter).
    ///
    /// # Errors
    ///
    /// When one fails, or the store fails.
    fn release(
        &self,
        checkpoints: &C,
        stream_id: String,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Where it stands on the bus, for status (`None` when the bus cannot be asked).
    fn progress(&self) -> impl Future<Output = Option<BusProgress>> + Send;
}
