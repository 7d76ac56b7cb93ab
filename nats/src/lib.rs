//! annals to NATS JetStream: a [`Relay`] that publishes the global log (the annals log is
//! the outbox), each event once and each stream in order, and the pieces consumers need to
//! read its messages back ([`headers::from_message`]).
//!
//! The relay is a kind of subscription of `annals-projections`: the same engine runs it,
//! with its checkpoint, lease, retries, dead letters and status.

mod error;
pub mod headers;
mod options;
mod relay;
mod secret;
mod stream;
mod subject;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{Error, Result};
pub use options::{NatsAuth, NatsOptions};
pub use relay::{Relay, RelayOptions};
pub use secret::Secret;
pub use stream::StreamSettings;
pub use subject::{
    category, decode_token, encode_token, SubjectFn, SubjectRule, MAX_SUBJECT_BYTES,
};

/// `async-nats`, whose types (`StorageType`, `Client`) appear in this crate's API.
pub use async_nats;
