#![doc = include_str!("../README.md")]

mod checkpoint;
#[cfg(feature = "cli")]
pub mod cli;
mod engine;
mod error;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod projection;
mod rebuild;
#[cfg(feature = "testkit")]
pub mod testkit;
mod worker;

pub use checkpoint::{CheckpointRecord, CheckpointStore, DeadLetter};
pub use engine::{
    EngineOptions, ProjectionEngine, ProjectionState, ProjectionStatus, RebuildProgress,
    RunningProjections,
};
pub use error::{Error, Result};
pub use memory::{MemoryCheckpoints, MemoryLease, MemoryTx};
#[cfg(feature = "postgres")]
pub use postgres::{PgCheckpoints, PgLease, PgTx};
pub use projection::{FailurePolicy, HandlerError, Projection, RetryPolicy};
pub use tokio_util::sync::CancellationToken;
