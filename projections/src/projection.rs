use std::{future::Future, time::Duration};

use annals_core::{DomainEvent, Envelope};

use crate::CheckpointStore;

/// Why a handler failed: any error, boxed. The engine retries, then halts or dead-letters
/// per [`Projection::on_failure`].
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What the engine does with an event whose handler still fails after the retries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Stop this projection (other projections go on); its status shows the error and the
    /// checkpoint stays before the failing event. Restarting the worker tries again.
    #[default]
    Halt,
    /// Record a dead letter (event, error, attempts, time) in the same transaction that
    /// moves the checkpoint past the event, and go on.
    DeadLetter,
}

/// How often, and how patiently, a failing event is retried before the policy applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubles each time, up to `max_backoff`.
    pub backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `n` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// A read model kept from the global log.
///
/// The engine reads only [`event_types`](Projection::event_types) (filtered by the store),
/// decodes them as [`Event`](Projection::Event), and calls
/// [`handle_batch`](Projection::handle_batch) with the transaction `tx` in which it will
/// also write the checkpoint: the read-model writes and the checkpoint commit together, so
/// every event's effect lands exactly once, whatever crashes.
///
/// `C` is where the read model lives: `PgCheckpoints` (a sqlx transaction) or
/// [`MemoryCheckpoints`](crate::MemoryCheckpoints) (an in-process table store).
pub trait Projection<C: CheckpointStore>: Send + Sync + 'static {
    /// The events it reads: an enum whose serde variant names are event types.
    type Event: DomainEvent;

    /// Persisted name: keys the checkpoint, dead letters and lease. Never derive it from a
    /// Rust type path.
    fn name(&self) -> &str;

    /// Event types to read. Default: every variant of [`Event`](Projection::Event).
    fn event_types(&self) -> Vec<String> {
        annals_core::event_types_of::<Self::Event>()
            .map(|names| names.iter().map(|n| (*n).to_owned()).collect())
            .unwrap_or_default()
    }

    /// The read-model tables it writes (unqualified names). A rebuild builds shadow copies
    /// of them and swaps them in; a reset empties them. Handlers must refer to them by
    /// unqualified name, so that during a rebuild the same SQL writes to the shadows.
    /// Default: none (rebuild and reset are refused).
    fn tables(&self) -> Vec<String> {
        Vec::new()
    }

    /// What to do with an event that keeps failing. Default: halt.
    fn on_failure(&self) -> FailurePolicy {
        FailurePolicy::Halt
    }

    /// Retries before [`on_failure`](Projection::on_failure) applies.
    fn retry(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// Creates the read model's tables if they are missing. Runs in its own transaction
    /// when a worker starts. Default: nothing.
    fn setup(&self, tx: &mut C::Tx) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = tx;
        async { Ok(()) }
    }

    /// Applies one event to the read model, inside `tx`.
    ///
    /// # Errors
    ///
    /// Any error: the transaction rolls back and the event is retried.
    fn handle(
        &self,
        event: &Envelope<Self::Event>,
        tx: &mut C::Tx,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Applies a batch, in order, inside `tx`. Override it to write a whole batch in one
    /// statement; the default calls [`handle`](Projection::handle) per event. When a batch
    /// fails, the engine rolls back and replays it one event at a time to isolate the
    /// failing event, so both paths must produce the same read model.
    ///
    /// # Errors
    ///
    /// Any error: the transaction rolls back.
    fn handle_batch(
        &self,
        events: &[Envelope<Self::Event>],
        tx: &mut C::Tx,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async move {
            for event in events {
                self.handle(event, tx).await?;
            }
            Ok(())
        }
    }
}
