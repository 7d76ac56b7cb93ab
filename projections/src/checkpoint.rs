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

    /// Marks `projection` halted with `error` (the checkpoint does not move).
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn halt(&self, projection: &str, error: &str) -> impl Future<Output = Result<()>> + Send;

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

    /// Whether a held lease is still valid (its connection is alive).
    fn lease_alive(&self, lease: &mut Self::Lease) -> impl Future<Output = bool> + Send;
}
