//! Where subscriptions keep their state, split by concern: a backend implements the
//! traits its kinds need, nothing more (a relay needs no shadow tables; an in-memory
//! backend has no shadow schema).
//!
//! - [`Checkpoints`]: the transaction a batch's effect and its checkpoint commit in;
//! - [`DeadLetters`]: events given up on, and the streams parked behind them;
//! - [`Leases`]: one active worker per subscription across processes;
//! - [`Rebuilds`]: resets and shadow rebuilds of read-model tables;
//! - [`ProcessStore`]: process managers' durable timers and open instances.
//!
//! [`CheckpointStore`] is all four: what a projection engine with rebuilds needs.

mod checkpoints;
mod dead_letters;
mod leases;
mod processes;
mod rebuilds;

pub use checkpoints::{CheckpointRecord, Checkpoints};
pub use dead_letters::{DeadLetter, DeadLetters};
pub use leases::Leases;
pub use processes::{ProcessStore, Timer};
pub use rebuilds::Rebuilds;

/// Every concern at once: checkpoints, dead letters, leases and rebuilds. Implemented for
/// any backend that implements the four (`PgCheckpoints`, [`MemoryCheckpoints`](crate::MemoryCheckpoints)).
pub trait CheckpointStore: Checkpoints + DeadLetters + Leases + Rebuilds {}

impl<T: Checkpoints + DeadLetters + Leases + Rebuilds> CheckpointStore for T {}
