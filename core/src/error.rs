use uuid::Uuid;

use crate::{ExpectedVersion, Position};

/// A boxed error from a codec or a storage backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with annals' [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a store, a codec or a payload can get wrong.
///
/// Domain rejections are not here: they are the aggregate's own error type, returned by
/// [`Repository::execute`](crate::Repository::execute) as
/// [`ExecuteError::Rejected`](crate::ExecuteError::Rejected).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A load as of a version past the stream's end.
    #[error("stream `{stream_id}` has {current} events; there is no version {requested}")]
    VersionPastEnd {
        /// The stream.
        stream_id: String,
        /// The version asked for.
        requested: u64,
        /// The stream's version now.
        current: u64,
    },

    /// A load as of a time before the stream's first event: the aggregate did not exist.
    #[error("stream `{stream_id}` had no events yet at {at}")]
    NotYet {
        /// The stream.
        stream_id: String,
        /// The time asked for.
        at: chrono::DateTime<chrono::Utc>,
    },

    /// Optimistic concurrency: the stream was not at the expected version.
    #[error("wrong expected version for stream `{stream_id}`: expected {expected}, actual version is {actual}")]
    Conflict {
        /// The stream appended to.
        stream_id: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was refused (0: no stream).
        actual: u64,
    },

    /// Some of an append's event ids are already stored, but not as this same append: an
    /// append is recognised as a repeat (and answered with its original result) only when
    /// every one of its events is stored, on the same streams, in the same order, by one
    /// earlier append. Nothing was written.
    #[error("event {event_id} is already stored, {detail}; an append is answered as a repeat only when all its events are stored by one earlier append, on the same streams, in the same order")]
    DuplicateEvent {
        /// The first event id that does not fit.
        event_id: Uuid,
        /// How the stored events differ from the append (another stream, another order,
        /// only some of them stored).
        detail: String,
    },

    /// An append inside a caller's transaction was refused because a younger transaction
    /// wrote to the stream first: the log would list this transaction's events before the
    /// stream's earlier versions. Roll the transaction back and run it again (a fresh
    /// transaction is younger than every committed writer). Only a transaction that wrote
    /// something before its first append can meet this.
    #[error("stream `{stream_id}` was written by a younger transaction after this transaction began writing; roll back and retry the transaction")]
    StaleTransaction {
        /// The stream appended to.
        stream_id: String,
    },

    /// The stored event type is not one the reading code knows.
    #[error("unknown event type `{event_type}` in stream `{stream_id}` at version {stream_version} (position {position})")]
    UnknownEventType {
        /// Persisted event type name.
        event_type: String,
        /// Stream of the event.
        stream_id: String,
        /// Version of the event in its stream.
        stream_version: u64,
        /// Global position of the event.
        position: Position,
    },

    /// A stored payload could not be decoded into the event type.
    #[error("cannot decode event `{event_type}` (schema v{schema_version}) in stream `{stream_id}` at version {stream_version}: {source}")]
    Decode {
        /// Persisted event type name.
        event_type: String,
        /// Schema version of the stored payload after upcasting.
        schema_version: u32,
        /// Stream of the event.
        stream_id: String,
        /// Version of the event in its stream.
        stream_version: u64,
        /// The codec's error.
        source: BoxError,
    },

    /// An upcaster refused or failed on a stored event.
    #[error("cannot upcast event `{event_type}` from schema v{from_version} in stream `{stream_id}` at version {stream_version}: {message}")]
    Upcast {
        /// Persisted event type name.
        event_type: String,
        /// Schema version the upcaster started from.
        from_version: u32,
        /// Stream of the event.
        stream_id: String,
        /// Version of the event in its stream.
        stream_version: u64,
        /// What the upcaster reported.
        message: String,
    },

    /// A value could not be encoded.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// The codec's error.
        source: BoxError,
    },

    /// The request itself is invalid (for example the same stream twice in one append, or
    /// a JSON-encoded payload that is not JSON). Nothing was written.
    #[error("invalid request: {0}")]
    InvalidInput(String),

    /// The storage backend failed (connection lost, database unreachable, ...). For an
    /// append, nothing was written unless the backend says the outcome is unknown.
    ///
    /// The message includes the backend's own; match the variant and downcast the box to
    /// inspect it.
    #[error("store backend error: {0}")]
    Backend(BoxError),
}

impl Error {
    /// True for an optimistic-concurrency conflict.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// True when running the operation again (after reloading what it depends on) can
    /// succeed: a conflict, or a caller's transaction that must be retried whole.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Conflict { .. } | Error::StaleTransaction { .. }
        )
    }

    /// Wraps a backend error.
    pub fn backend(error: impl Into<BoxError>) -> Self {
        Error::Backend(error.into())
    }
}
