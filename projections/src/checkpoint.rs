use std::{fmt, future::Future};

use annals_core::{Position, RecordedEvent};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::Result;

/// A projection's persisted progress and health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointRecord {
    /// The projection's name.
    pub projection: String,
    /// Every event up to here has been applied (or dead-lettered).
    pub position: Position,
    /// `None` while healthy; the error when the projection halted.
    pub halted: Option<String>,
    /// When the checkpoint last changed.
    pub updated_at: DateTime<Utc>,
}

/// An event a projection gave up on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Identifier for retry / discard (assigned by the store; 0 before it is recorded).
    pub id: i64,
    /// The projection that failed.
    pub projection: String,
    /// The event.
    pub event_id: Uuid,
    /// Its position in the global log.
    pub position: Position,
    /// Its stream.
    pub stream_id: String,
    /// Its version in the stream.
    pub stream_version: u64,
    /// Its type.
    pub event_type: String,
    /// The handler's last error.
    pub error: String,
    /// How many times the handler was tried.
    pub attempts: u32,
    /// When it was given up on.
    pub failed_at: DateTime<Utc>,
}

impl DeadLetter {
    pub(crate) fn new(
        projection: &str,
        event: &RecordedEvent,
        error: String,
        attempts: u32,
    ) -> Self {
        Self {
            id: 0,
            projection: projection.to_owned(),
            event_id: event.event_id,
            position: event.position,
            stream_id: event.stream_id.clone(),
            stream_version: event.stream_version,
            event_type: event.event_type.clone(),
            error,
            attempts,
            failed_at: Utc::now(),
        }
    }
}

impl fmt::Display for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {} {}@{} ({}) at {}: {} [{} attempts]",
            self.id,
            self.projection,
            self.stream_id,
            self.stream_version,
            self.event_type,
            self.position,
            self.error,
            self.attempts
        )
    }
}

/// What the shadow-rebuild hooks of [`CheckpointStore`] answer on a backend without them.
fn no_shadows<T>() -> Result<T> {
    Err(crate::Error::Unsupported(
        "shadow rebuilds need the Postgres read-model store",
    ))
}

/// Where read models, checkpoints, dead letters and leases live, with the transaction that
/// ties a batch's read-model writes to its checkpoint.
///
/// Implemented by `PgCheckpoints` (feature `postgres`) and
/// [`MemoryCheckpoints`](crate::MemoryCheckpoints).
pub trait CheckpointStore: Clone + Send + Sync + 'static {
    /// An open unit of work handed to projection handlers.
    type Tx: Send;

    /// Proof of being the one active worker of a projection; dropping it releases it.
    type Lease: Send + Sync;

    /// Opens a batch's transaction and checks, under a lock held until commit or rollback,
    /// that `projection`'s checkpoint is still `from`.
    ///
    /// # Errors
    ///
    /// [`Error::Fenced`](crate::Error::Fenced) when another worker moved it.
    fn begin(
        &self,
        projection: &str,
        from: Position,
    ) -> impl Future<Output = Result<Self::Tx>> + Send;

    /// Moves `projection`'s checkpoint to `to` (clearing a halt) and commits the batch.
    ///
    /// # Errors
    ///
    /// Backend errors; nothing of the batch is kept then.
    fn commit(
        &self,
        tx: Self::Tx,
        projection: &str,
        to: Position,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Opens a transaction that moves no checkpoint (setup, dead-letter retries).
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn begin_untracked(&self) -> impl Future<Output = Result<Self::Tx>> + Send;

    /// Commits a transaction from [`begin_untracked`](CheckpointStore::begin_untracked).
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn commit_untracked(&self, tx: Self::Tx) -> impl Future<Output = Result<()>> + Send;

    /// One projection's checkpoint, if it ever ran.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn checkpoint(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<Option<CheckpointRecord>>> + Send;

    /// Every checkpoint.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn checkpoints(&self) -> impl Future<Output = Result<Vec<CheckpointRecord>>> + Send;

    /// Marks `projection` halted with `error`, if its checkpoint is still `at` (a stale
    /// worker's halt is ignored). The checkpoint does not move.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn halt(
        &self,
        projection: &str,
        at: Position,
        error: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Records a dead letter inside `tx`.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn record_dead_letter(
        &self,
        tx: &mut Self::Tx,
        letter: &DeadLetter,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Dead letters, oldest first, of one projection or all.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn dead_letters(
        &self,
        projection: Option<&str>,
    ) -> impl Future<Output = Result<Vec<DeadLetter>>> + Send;

    /// Deletes a dead letter inside `tx`; returns whether it existed.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn remove_dead_letter(
        &self,
        tx: &mut Self::Tx,
        id: i64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Tries to become `projection`'s one active worker; `None` when another holds it.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn try_lease(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<Option<Self::Lease>>> + Send;

    /// Gives a lease up now (dropping it also releases it, eventually).
    fn release(&self, lease: Self::Lease) -> impl Future<Output = ()> + Send {
        async move { drop(lease) }
    }

    /// Whether a held lease is still valid (its connection is alive).
    fn lease_alive(&self, lease: &mut Self::Lease) -> impl Future<Output = bool> + Send;

    /// Whether some worker, in any process, holds `projection`'s lease now.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn lease_held(&self, projection: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Empties `tables` and moves `projection`'s checkpoint back to the start (clearing its
    /// halt and dead letters), in one transaction. Its workers then replay the log.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn reset(&self, projection: &str, tables: &[String])
        -> impl Future<Output = Result<()>> + Send;

    /// Where an unfinished rebuild of `projection` stands, if one exists.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn rebuild_checkpoint(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<Option<Position>>> + Send {
        let _ = projection;
        async { Ok(None) }
    }

    /// Starts or resumes a rebuild: creates the shadow area if missing and returns a
    /// transaction writing there (for the projection's `setup`) with the position to
    /// resume from.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`](crate::Error::Unsupported) where shadow rebuilds are not
    /// available; backend errors.
    fn open_shadow(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<(Self::Tx, Position)>> + Send {
        let _ = projection;
        async { no_shadows() }
    }

    /// A batch transaction writing to the shadow tables, fenced on the rebuild's
    /// checkpoint.
    ///
    /// # Errors
    ///
    /// As [`begin`](CheckpointStore::begin).
    fn begin_shadow(
        &self,
        projection: &str,
        tables: &[String],
        from: Position,
    ) -> impl Future<Output = Result<Self::Tx>> + Send {
        let _ = (projection, tables, from);
        async { no_shadows() }
    }

    /// Commits a shadow batch, moving the rebuild's checkpoint to `to`.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn commit_shadow(
        &self,
        tx: Self::Tx,
        projection: &str,
        to: Position,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (tx, projection, to);
        async { no_shadows() }
    }

    /// Opens the swap: a shadow transaction that also holds the live checkpoint's lock,
    /// so live batches wait until the swap commits.
    ///
    /// # Errors
    ///
    /// As [`begin`](CheckpointStore::begin).
    fn begin_swap(
        &self,
        projection: &str,
        tables: &[String],
        from: Position,
    ) -> impl Future<Output = Result<Self::Tx>> + Send {
        let _ = (projection, tables, from);
        async { no_shadows() }
    }

    /// Replaces the live `tables` with the shadow ones, sets the live checkpoint to `to`,
    /// removes the shadow area and commits: readers see the old tables, then the new ones.
    ///
    /// # Errors
    ///
    /// Backend errors; nothing changes then.
    fn commit_swap(
        &self,
        tx: Self::Tx,
        projection: &str,
        tables: &[String],
        to: Position,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (tx, projection, tables, to);
        async { no_shadows() }
    }

    /// Drops an unfinished rebuild; returns whether there was one. Live tables are not
    /// touched.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn discard_shadow(&self, projection: &str) -> impl Future<Output = Result<bool>> + Send {
        let _ = projection;
        async { Ok(false) }
    }
}
