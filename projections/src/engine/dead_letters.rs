//! Dead-letter operations: retry (the handler again, then the events parked behind it) and
//! discard (which releases the parked events), serialized with the live worker's batches
//! through the checkpoint's lock.

use annals_core::{EventStore, ReadStream};

use super::{EngineInner, ProjectionEngine};
use crate::{subscription::Subscriber, CheckpointStore, DeadLetter, Error, Result};

impl<S, C> ProjectionEngine<S, C>
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
{
    async fn letter(&self, id: i64) -> Result<DeadLetter> {
        self.inner
            .checkpoints
            .dead_letter(id)
            .await?
            .ok_or(Error::DeadLetterNotFound(id))
    }

    /// The letter an event of `letter`'s stream is parked behind, if `letter` is parked.
    async fn parked_behind(&self, letter: &DeadLetter) -> Result<Option<i64>> {
        let earlier = self
            .inner
            .checkpoints
            .dead_letters(Some(&letter.projection))
            .await?
            .into_iter()
            .filter(|d| d.stream_id == letter.stream_id && d.stream_version < letter.stream_version)
            .min_by_key(|d| d.stream_version);
        Ok(earlier.map(|d| d.id))
    }

    /// Runs the subscription's handler on a dead-lettered event again (now, out of log
    /// order) and removes the dead letter in the same transaction; with
    /// [`FailurePolicy::Park`](crate::FailurePolicy::Park), then the events parked behind it, in stream order.
    ///
    /// # Errors
    ///
    /// [`Error::DeadLetterNotFound`], [`Error::UnknownProjection`],
    /// [`Error::ParkedBehind`] for a parked event whose stream's head letter is still
    /// there, or [`Error::Handler`] when it fails again (the dead letter stays; a parked
    /// event that fails becomes its stream's head letter, with its own error).
    pub async fn retry_dead_letter(&self, id: i64) -> Result<()> {
        let letter = self.letter(id).await?;
        let entry = self.find(&letter.projection)?;
        if letter.parks_under(entry.policy()) {
            if let Some(head) = self.parked_behind(&letter).await? {
                return Err(Error::ParkedBehind { id, head });
            }
        }
        entry.retry(&self.inner, letter).await
    }

    /// Deletes a dead letter without applying it. With [`FailurePolicy::Park`](crate::FailurePolicy::Park), the events
    /// parked behind it are then applied in stream order (discarding the head of a parked
    /// stream is how the operator lets the stream go on without that event).
    ///
    /// # Errors
    ///
    /// [`Error::DeadLetterNotFound`], store errors, or [`Error::Handler`] when a released
    /// event fails (it becomes its stream's head letter).
    pub async fn discard_dead_letter(&self, id: i64) -> Result<()> {
        let letter = self.letter(id).await?;
        let entry = self.find(&letter.projection)?;
        let parking = letter.parks_under(entry.policy());
        let head = parking && self.parked_behind(&letter).await?.is_none();
        let checkpoints = &self.inner.checkpoints;
        let (mut tx, _) = checkpoints.lock(&letter.projection).await?;
        if !checkpoints.remove_dead_letter(&mut tx, id).await? {
            return Err(Error::DeadLetterNotFound(id));
        }
        checkpoints.commit_untracked(tx).await?;
        if head {
            entry.release(&self.inner, letter.stream_id).await?;
        }
        Ok(())
    }
}

/// Handles one dead-lettered event again, removing its letter in the same transaction.
async fn apply_letter<K, S, C>(
    kind: &K,
    engine: &EngineInner<S, C>,
    letter: &DeadLetter,
) -> Result<()>
where
    K: Subscriber<C>,
    S: EventStore,
    C: CheckpointStore,
{
    let raw = engine
        .store
        .read_stream(
            &letter.stream_id,
            ReadStream::forward_from(letter.stream_version).limit(1),
        )
        .await?
        .into_iter()
        .find(|e| e.event_id == letter.event_id)
        .ok_or(Error::DeadLetterNotFound(letter.id))?;
    let (mut tx, _) = engine.checkpoints.lock(kind.name()).await?;
    if !engine
        .checkpoints
        .remove_dead_letter(&mut tx, letter.id)
        .await?
    {
        return Err(Error::DeadLetterNotFound(letter.id));
    }
    let one = std::slice::from_ref(&raw);
    let outcome = match kind.deliver(one).await {
        Ok(()) => kind.apply(one, &mut tx).await,
        Err(failure) => Err(failure),
    };
    match outcome {
        Ok(()) => engine.checkpoints.commit_untracked(tx).await,
        Err(failure) => Err(Error::Handler {
            projection: kind.name().to_owned(),
            source: failure.into_error(),
        }),
    }
}

/// Retries a letter, then (when parking) the events parked behind it.
pub(crate) async fn retry<K, S, C>(
    kind: &K,
    engine: &EngineInner<S, C>,
    letter: DeadLetter,
) -> Result<()>
where
    K: Subscriber<C>,
    S: EventStore,
    C: CheckpointStore,
{
    apply_letter(kind, engine, &letter).await?;
    if letter.parks_under(kind.on_failure()) {
        release(kind, engine, letter.stream_id).await?;
    }
    Ok(())
}

/// Applies the letters of `stream_id`, oldest version first, until none is left or one
/// fails; a failing one becomes the stream's head letter, with its own error.
pub(crate) async fn release<K, S, C>(
    kind: &K,
    engine: &EngineInner<S, C>,
    stream_id: String,
) -> Result<()>
where
    K: Subscriber<C>,
    S: EventStore,
    C: CheckpointStore,
{
    let policy = kind.on_failure();
    loop {
        let next = engine
            .checkpoints
            .dead_letters(Some(kind.name()))
            .await?
            .into_iter()
            .filter(|d| d.stream_id == stream_id && d.parks_under(policy))
            .min_by_key(|d| d.stream_version);
        let Some(next) = next else {
            return Ok(());
        };
        if let Err(error) = apply_letter(kind, engine, &next).await {
            let head = DeadLetter {
                error: error.report(),
                attempts: next.attempts + 1,
                failed_at: chrono::Utc::now(),
                ..next
            };
            let (mut tx, _) = engine.checkpoints.lock(kind.name()).await?;
            engine
                .checkpoints
                .record_dead_letter(&mut tx, &head.parking(true))
                .await?;
            engine.checkpoints.commit_untracked(tx).await?;
            return Err(error);
        }
    }
}
