#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc = include_str!("../README.md")]

mod append;
mod error;
mod event_store;
mod horizon;
mod listen;
mod migrations;
mod read;
mod retry;
mod roles;
mod snapshot;
mod sql;
mod store;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use append::OutcomeUnknown;
pub use error::ConnectError;
pub use horizon::HorizonHolder;
pub use migrations::{Migration, MigrationStatus};
pub use store::{PgEventStore, PgStoreOptions, SslMode};

/// The snapshot side of [`PgEventStore`]: the same handle, since snapshots share the events'
/// pool and an aggregate loads its snapshot and tail events in one query.
pub type PgSnapshotStore = PgEventStore;
