//! The operator's way out of a halt: move the event a subscription halted on into its dead
//! letters and let it go on, optionally parking the rest of that event's stream behind it.

use annals_core::{EventStore, ReadAll};
use tracing::warn;

use super::ProjectionEngine;
use crate::{CheckpointStore, DeadLetter, Error, Result};

impl<S, C> ProjectionEngine<S, C>
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
{
    /// Skips the event subscription `name` halted on: records it as a dead letter (with the
    /// halt's error and attempts) and moves the checkpoint past it, in one transaction that
    /// holds the checkpoint's lock; the halt is cleared, and a halted worker, in this
    /// process or another, resumes within a lease-retry interval. With `park_stream`, the
    /// later events of that stream are parked behind the letter (recorded as dead letters,
    /// not applied) until it is retried or discarded, so the stream's effects never happen
    /// out of order; without it, the rest of the stream applies as usual.
    ///
    /// Returns the recorded letter (its id is what `dead-letters retry` and `discard` take).
    ///
    /// ```no_run
    /// # async fn demo(engine: annals_projections::ProjectionEngine<
    /// #     annals_store_memory::MemoryEventStore, annals_projections::MemoryCheckpoints>)
    /// # -> annals_projections::Result<()> {
    /// let letter = engine.skip("account_balances", true).await?;
    /// println!("skipped {letter}");
    /// // ... fix the handler, then:
    /// engine.retry_dead_letter(letter.id).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::UnknownProjection`]; [`Error::NothingToSkip`] when it is not halted (or
    /// reads a bus); store errors.
    pub async fn skip(&self, name: &str, park_stream: bool) -> Result<DeadLetter> {
        let entry = self.find(name)?;
        let nothing = |reason: &str| Error::NothingToSkip {
            subscription: name.to_owned(),
            reason: reason.to_owned(),
        };
        let Some(types) = entry.reads() else {
            return Err(nothing(
                "it reads a message bus: its failures are dead-lettered there, not halted on",
            ));
        };
        let checkpoints = &self.inner.checkpoints;
        // The lock: a worker's batch (or a concurrent skip) cannot move the checkpoint
        // between the check below and the commit.
        let (mut tx, at) = checkpoints.lock(name).await?;
        let record = checkpoints
            .checkpoint(name)
            .await?
            .filter(|r| r.position == at);
        let Some((error, attempts)) =
            record.and_then(|r| r.halted.map(|error| (error, r.halted_attempts)))
        else {
            return Err(nothing("it is not halted"));
        };
        // The event it halted on: its first event after the checkpoint (a halted worker
        // handles one event at a time from the checkpoint on).
        let read = ReadAll::after(at).limit(1);
        let read = match types {
            Some(types) => read.event_types(types),
            None => read,
        };
        let Some(event) = self.inner.store.read_all(read).await?.into_iter().next() else {
            return Err(nothing("no event follows its checkpoint"));
        };
        let mut letter = DeadLetter::new(name, &event, error, attempts.max(1)).parking(park_stream);
        letter.id = checkpoints.record_dead_letter(&mut tx, &letter).await?;
        checkpoints.commit(tx, name, event.position).await?;
        warn!(%letter, park_stream, "skipped the halted event into the dead letters");
        Ok(letter)
    }
}
