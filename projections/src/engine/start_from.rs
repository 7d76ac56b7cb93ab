//! Starting a subscription at a chosen point of the log (a relay or a new consumer that
//! should begin at a time, not at the start).

use annals_core::{EventStore, Position};
use tracing::warn;

use super::ProjectionEngine;
use crate::{CheckpointStore, Error, Result};

impl<S, C> ProjectionEngine<S, C>
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
{
    /// Moves subscription `name`'s checkpoint to `position` (for a time:
    /// [`EventStore::position_at`]), so that its workers continue from there: events up to
    /// it are skipped (never handled), and moving back handles again what follows (a
    /// relay recognises what it published already). Refused while a worker of it runs
    /// anywhere (stop it first), and for a projection (its tables would no longer match
    /// its checkpoint: rebuild it instead).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownProjection`], [`Error::Unsupported`] as above, store errors.
    pub async fn start_from(&self, name: &str, position: Position) -> Result<Position> {
        let entry = self.find(name)?;
        if !entry.tables().is_empty() {
            return Err(Error::Unsupported(
                "a projection starts from its tables' checkpoint: rebuild it instead",
            ));
        }
        let checkpoints = &self.inner.checkpoints;
        if checkpoints.lease_held(name).await? {
            return Err(Error::Unsupported(
                "a worker of this subscription is running: stop it first",
            ));
        }
        let (tx, was) = checkpoints.lock(name).await?;
        checkpoints.commit(tx, name, position).await?;
        warn!(subscription = name, from = %was, to = %position, "checkpoint moved by the operator");
        Ok(was)
    }
}
