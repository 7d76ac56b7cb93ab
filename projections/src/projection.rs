//! Read models: the [`Projection`] trait, and the adapter that makes a projection a kind of
//! subscription.

use std::{future::Future, sync::Arc};

use annals_core::{decode_event, DomainEvent, Envelope, RecordedEvent, Upcasters};

use crate::{
    subscription::{Failure, Subscriber},
    Checkpoints, FailurePolicy, RetryPolicy,
};

/// Why a handler failed: any error, boxed. The engine retries, then halts or dead-letters
/// per [`Projection::on_failure`].
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

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
pub trait Projection<C: Checkpoints>: Send + Sync + 'static {
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

/// A projection as a kind of subscription: decodes its events (through the engine's
/// upcasters) and writes them in the checkpoint's transaction.
pub(crate) struct ProjectionKind<P> {
    pub(crate) projection: Arc<P>,
    pub(crate) upcasters: Arc<Upcasters>,
}

impl<P> ProjectionKind<P> {
    /// Decodes a batch; an event that does not decode can never be applied.
    pub(crate) fn decode<E: DomainEvent>(
        &self,
        events: &[RecordedEvent],
    ) -> Result<Vec<Envelope<E>>, Failure> {
        events
            .iter()
            .map(|e| decode_event(e, &self.upcasters).map_err(|e| Failure::Poison(e.into())))
            .collect()
    }
}

impl<P, C> Subscriber<C> for ProjectionKind<P>
where
    P: Projection<C>,
    C: Checkpoints,
{
    fn name(&self) -> &str {
        self.projection.name()
    }

    fn kind(&self) -> &'static str {
        "projection"
    }

    fn event_types(&self) -> Option<Vec<String>> {
        Some(self.projection.event_types())
    }

    fn retry(&self) -> RetryPolicy {
        self.projection.retry()
    }

    fn on_failure(&self) -> FailurePolicy {
        self.projection.on_failure()
    }

    async fn setup(&self, tx: &mut C::Tx) -> Result<(), Failure> {
        self.projection.setup(tx).await.map_err(setup_failure)
    }

    async fn apply(&self, events: &[RecordedEvent], tx: &mut C::Tx) -> Result<(), Failure> {
        let envelopes = self.decode::<P::Event>(events)?;
        let outcome = match envelopes.as_slice() {
            [one] => self.projection.handle(one, tx).await,
            many => self.projection.handle_batch(many, tx).await,
        };
        outcome.map_err(Failure::Retry)
    }
}

/// Whether a read model's failed setup may succeed later: a statement the database refuses
/// for its text or the role's privileges (SQLSTATE classes 42 and 28) fails the same way
/// every time ([`Failure::Poison`]); anything else (a connection lost, a lock timeout) is
/// worth retrying ([`Failure::Unavailable`]).
pub fn setup_failure(error: HandlerError) -> Failure {
    #[cfg(feature = "postgres")]
    {
        let code = error
            .downcast_ref::<sqlx::Error>()
            .and_then(|e| e.as_database_error())
            .and_then(|d| d.code().map(|c| c.into_owned()));
        if code.is_some_and(|c| c.starts_with("42") || c.starts_with("28")) {
            return Failure::Poison(error);
        }
    }
    Failure::Unavailable(error)
}
