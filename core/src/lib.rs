#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc = include_str!("../README.md")]

mod aggregate;
pub mod catalog;
mod codec;
mod envelope;
mod error;
mod position;
mod repeat;
mod repository;
pub mod schema;
mod snapshot;
mod store;
mod upcast;

#[cfg(feature = "testkit")]
pub mod testkit;
pub mod trace;

pub use aggregate::{Aggregate, DomainEvent};
pub use catalog::EventCatalog;
pub use codec::{decode_event, encode_event, event_type_of, event_types_of, Encoding};
pub use envelope::{Envelope, Metadata, NewEvent, RecordedEvent};
pub use error::{BoxError, Error, Result};
pub use position::Position;
pub use repeat::{check_repeat, Repeat, StoredAt};
pub use repository::{
    command_event_id, AsOf, ExecuteError, Executed, Loaded, Repository, RepositoryOptions,
};
pub use snapshot::{Snapshot, SnapshotStore};
pub use store::{
    check_appends, check_stream_id, AppendResult, Direction, EventStore, ExpectedVersion, ReadAll,
    ReadStream, StreamAppend, StreamVersion, MAX_STREAM_ID_BYTES,
};
pub use upcast::Upcasters;
