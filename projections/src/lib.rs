#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc = include_str!("../README.md")]

#[cfg(feature = "cli")]
pub mod cli;
mod engine;
mod error;
mod memory;
mod policy;
#[cfg(feature = "postgres")]
mod postgres;
pub mod process;
mod projection;
mod rebuild;
pub mod store;
pub mod subscription;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use engine::{EngineOptions, ProjectionEngine, RunningProjections};
pub use error::{Error, Result};
pub use memory::{MemoryCheckpoints, MemoryLease, MemoryTx};
pub use policy::{FailurePolicy, RetryPolicy};
#[cfg(feature = "postgres")]
pub use postgres::{PgCheckpoints, PgLease, PgTx};
pub use process::{
    DispatchError, Dispatched, Dispatcher, Input, ProcessManager, ProcessRuntime, TimerChange,
};
pub use projection::{setup_failure, HandlerError, Projection};
pub use rebuild::{RebuildOptions, RebuildProgress};
pub use store::{
    CheckpointRecord, CheckpointStore, Checkpoints, DeadLetter, DeadLetters, Leases, ProcessStore,
    Rebuilds, Timer,
};
pub use subscription::{
    BusProgress, BusSubscription, Failure, Subscriber, SubscriptionState, SubscriptionStatus,
    WorkerStatus,
};
pub use tokio_util::sync::CancellationToken;
