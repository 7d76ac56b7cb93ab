use std::future::Future;

use annals_core::Position;
use chrono::{DateTime, Utc};

use crate::Result;

/// A subscription's persisted progress and health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointRecord {
    /// The subscription's name.
    pub projection: String,
    /// Every event up to here has been handled (or dead-lettered).
    pub position: Position,
    /// `None` while healthy; the error when the subscription halted.
    pub halted: Option<String>,
    /// How many attempts the event it halted on took (0 while healthy).
    pub halted_attempts: u32,
    /// When the checkpoint last changed.
    pub updated_at: DateTime<Utc>,
}

/// Checkpoints, and the transaction that ties a batch's effect to its checkpoint: a
/// projection's read-model writes commit with it; a relay's publish is acknowledged before
/// it commits.
pub trait Checkpoints: Clone + Send + Sync + 'static {
    /// An open unit of work handed to handlers.
    type Tx: Send;

    /// Opens a batch's transaction and checks, under a lock held until commit or rollback,
    /// that `name`'s checkpoint is still `from`.
    ///
    /// # Errors
    ///
    /// [`Error::Fenced`](crate::Error::Fenced) when another worker moved it.
    fn begin(&self, name: &str, from: Position) -> impl Future<Output = Result<Self::Tx>> + Send;

    /// Opens a transaction holding `name`'s checkpoint lock (batches wait for it) without
    /// checking where it stands, which it returns; commit it with
    /// [`commit_untracked`](Checkpoints::commit_untracked). Dead-letter retries use it, so
    /// that a retried event and the live worker's batches never interleave.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn lock(&self, name: &str) -> impl Future<Output = Result<(Self::Tx, Position)>> + Send;

    /// Moves `name`'s checkpoint to `to` (clearing a halt) and commits the batch.
    ///
    /// # Errors
    ///
    /// Backend errors; nothing of the batch is kept then.
    fn commit(
        &self,
        tx: Self::Tx,
        name: &str,
        to: Position,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Opens a transaction that moves no checkpoint (setup, dead-letter retries).
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn begin_untracked(&self) -> impl Future<Output = Result<Self::Tx>> + Send;

    /// Commits a transaction from [`begin_untracked`](Checkpoints::begin_untracked).
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn commit_untracked(&self, tx: Self::Tx) -> impl Future<Output = Result<()>> + Send;

    /// One subscription's checkpoint, if it ever ran.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn checkpoint(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<CheckpointRecord>>> + Send;

    /// Every checkpoint.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn checkpoints(&self) -> impl Future<Output = Result<Vec<CheckpointRecord>>> + Send;

    /// Marks `name` halted with `error` after `attempts` attempts, if its checkpoint is still
    /// `at` (a stale worker's halt is ignored). The checkpoint does not move.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn halt(
        &self,
        name: &str,
        at: Position,
        error: &str,
        attempts: u32,
    ) -> impl Future<Output = Result<()>> + Send;
}
