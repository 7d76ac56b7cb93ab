#![cfg_attr(docsrs, feature(doc_cfg))]
//! annals to NATS JetStream: a [`Relay`] that publishes the global log (the annals log is
//! the outbox), each event once and each stream in order; an [`InboxConsumer`] that
//! applies them in another service exactly once and in stream order, with the same
//! projection code as a read model of the log; and the pieces other consumers need to read
//! the messages back ([`headers::from_message`]).
//!
//! Both are kinds of subscription of `annals-projections`: the same engine runs them, with
//! their retries, dead letters (with parking), status and operations CLI; the relay also
//! with a checkpoint and a lease, the consumer with an inbox, several processes sharing one
//! durable JetStream consumer.

mod error;
pub mod headers;
mod inbox;
mod options;
mod relay;
mod secret;
mod stream;
mod subject;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{Error, Result};
pub use inbox::{InboxConsumer, InboxOptions};
pub use options::{NatsAuth, NatsOptions};
pub use relay::{Relay, RelayOptions};
pub use secret::Secret;
pub use stream::StreamSettings;
pub use subject::{
    category, decode_token, encode_token, SubjectFn, SubjectRule, MAX_SUBJECT_BYTES,
};

/// `async-nats`, whose types (`StorageType`, `Client`) appear in this crate's API.
pub use async_nats;
