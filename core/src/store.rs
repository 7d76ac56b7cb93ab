use std::{fmt, future::Future, time::Duration};

use crate::{Error, NewEvent, Position, RecordedEvent, Result};

/// The longest stream id a store accepts, in bytes of UTF-8. Longer ids are refused with
/// [`Error::InvalidInput`] before anything is sent to the backend, by every store alike
/// (PostgreSQL indexes stream ids, and an index entry must fit in a third of a page; the
/// NATS relay puts stream ids in subjects).
pub const MAX_STREAM_ID_BYTES: usize = 1024;

/// Checks a stream id against what every store accepts: not empty, at most
/// [`MAX_STREAM_ID_BYTES`] bytes, no NUL character (PostgreSQL text cannot hold one).
///
/// # Errors
///
/// [`Error::InvalidInput`] naming the problem (and the id's length, never the whole id).
///
/// ```
/// use annals_core::{check_stream_id, MAX_STREAM_ID_BYTES};
///
/// assert!(check_stream_id("account-42").is_ok());
/// assert!(check_stream_id("").is_err());
/// assert!(check_stream_id(&"x".repeat(MAX_STREAM_ID_BYTES + 1)).is_err());
/// ```
pub fn check_stream_id(stream_id: &str) -> Result<()> {
    if stream_id.is_empty() {
        return Err(Error::InvalidInput("empty stream id".to_owned()));
    }
    if stream_id.len() > MAX_STREAM_ID_BYTES {
        return Err(Error::InvalidInput(format!(
            "stream id of {} bytes is longer than the {MAX_STREAM_ID_BYTES} bytes a store accepts",
            stream_id.len()
        )));
    }
    if stream_id.contains('\0') {
        return Err(Error::InvalidInput(
            "stream id contains a NUL character".to_owned(),
        ));
    }
    Ok(())
}

/// What the caller believes about a stream's version when appending.
///
/// Versions are 1-based: a stream with three events is at version 3, and a stream with no
/// events does not exist (version 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// Append whatever the version is.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream must be exactly at this version (`Exact(0)` is the same as `NoStream`).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` satisfies this expectation.
    pub fn matches(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::StreamExists => actual > 0,
            ExpectedVersion::Exact(expected) => actual == expected,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("an existing stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// Checks an append request the way every store does before writing anything: each stream
/// id ([`check_stream_id`]), no stream twice, no event id twice, a non-empty event type
/// without NUL, and a payload well-formed for its encoding.
///
/// # Errors
///
/// [`Error::InvalidInput`] naming the first problem.
pub fn check_appends(appends: &[StreamAppend]) -> Result<()> {
    let mut streams = std::collections::HashSet::with_capacity(appends.len());
    let mut ids = std::collections::HashSet::new();
    for append in appends {
        check_stream_id(&append.stream_id)?;
        if !streams.insert(append.stream_id.as_str()) {
            return Err(Error::InvalidInput(format!(
                "stream `{}` appears twice in one append",
                append.stream_id
            )));
        }
        for event in &append.events {
            if !ids.insert(event.event_id) {
                return Err(Error::InvalidInput(format!(
                    "event id {} appears twice in one append",
                    event.event_id
                )));
            }
            if event.event_type.is_empty() || event.event_type.contains('\0') {
                return Err(Error::InvalidInput(
                    "an event type must be non-empty and free of NUL characters".to_owned(),
                ));
            }
            event.encoding.validate(&event.payload)?;
        }
    }
    Ok(())
}

/// Events to append to one stream, with the version the caller expects it at.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamAppend {
    /// Target stream.
    pub stream_id: String,
    /// Optimistic-concurrency check.
    pub expected: ExpectedVersion,
    /// Events, in order. May be empty: the append then only checks `expected`.
    pub events: Vec<NewEvent>,
}

impl StreamAppend {
    /// Builds one stream's part of an append.
    pub fn new(
        stream_id: impl Into<String>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Self {
        Self {
            stream_id: stream_id.into(),
            expected,
            events,
        }
    }
}

/// A stream's version after an append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamVersion {
    /// The stream.
    pub stream_id: String,
    /// Its version after the append.
    pub version: u64,
}

/// What a successful append did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendResult {
    /// Position of the last event appended (unchanged head when nothing was appended).
    ///
    /// Tailing readers may see it a moment later than the append returns (Postgres shows
    /// an event once every older transaction has finished), so wait for it with
    /// `wait_for_events` or a projection's `wait_until_caught_up`, never by assuming the
    /// log already reaches it.
    pub position: Position,
    /// Each stream's new version, in the order given.
    pub streams: Vec<StreamVersion>,
}

impl AppendResult {
    /// The new version of the first stream (the only one for a single-stream append).
    pub fn version(&self) -> u64 {
        self.streams.first().map_or(0, |s| s.version)
    }
}

/// Which way to read a stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first.
    #[default]
    Forward,
    /// Newest first.
    Backward,
}

/// How to read one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadStream {
    /// First version to return (inclusive; `u64::MAX` reading backward means the end).
    pub from: u64,
    /// Reading order.
    pub direction: Direction,
    /// Most events to return.
    pub limit: Option<usize>,
}

impl ReadStream {
    /// Every event, oldest first.
    pub const fn all() -> Self {
        Self::forward_from(1)
    }

    /// Oldest first, starting at `version`.
    pub const fn forward_from(version: u64) -> Self {
        Self {
            from: version,
            direction: Direction::Forward,
            limit: None,
        }
    }

    /// Newest first, starting at `version` (`u64::MAX` for the end).
    pub const fn backward_from(version: u64) -> Self {
        Self {
            from: version,
            direction: Direction::Backward,
            limit: None,
        }
    }

    /// At most `limit` events.
    #[must_use]
    pub const fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// How to read the global log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadAll {
    /// Return events strictly after this position.
    pub after: Position,
    /// Most events to return.
    pub limit: usize,
    /// Only these event types (filtered by the store, not after decoding); `None`: all.
    pub event_types: Option<Vec<String>>,
}

impl ReadAll {
    /// Up to 1,000 events after `position`, any type.
    pub fn after(position: Position) -> Self {
        Self {
            after: position,
            limit: 1_000,
            event_types: None,
        }
    }

    /// At most `limit` events.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Only events of these types.
    #[must_use]
    pub fn event_types<I, T>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.event_types = Some(types.into_iter().map(Into::into).collect());
        self
    }
}

/// An append-only event log of streams with optimistic concurrency and a global order.
///
/// The contract every backend keeps (checked by `testkit::conformance`):
/// - an append is atomic across all its streams, and refused whole with
///   [`Error::Conflict`](crate::Error::Conflict) when any expectation fails;
/// - stream versions are 1-based and gapless;
/// - [`read_all`](EventStore::read_all) returns events in [`Position`] order, and a reader
///   that keeps reading after the last position it saw never skips an event that commits
///   later, and never sees one that does not commit;
/// - in that order, each stream's events come in increasing version, whatever the
///   expected versions and however appends to several streams interleave;
/// - appends are idempotent by event id: repeating an append whose events are all
///   stored, on the same streams in the same order, returns the original
///   [`AppendResult`] whatever the expected version, so retrying after a lost reply
///   (a connection that died during COMMIT) is safe.
pub trait EventStore: Send + Sync {
    /// Appends to one or several streams atomically.
    ///
    /// An append whose events are already stored by one earlier append (same event ids,
    /// streams and order) is not written again: it returns that append's result.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`](crate::Error::Conflict) on a version mismatch (nothing written),
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for a malformed request (see
    /// [`check_stream_id`]), [`Error::DuplicateEvent`](crate::Error::DuplicateEvent) when
    /// some of the event ids are stored but not as this append,
    /// [`Error::Backend`](crate::Error::Backend) when the store fails (for an append, the
    /// outcome is then unknown: retry it with the same events).
    fn append(
        &self,
        appends: Vec<StreamAppend>,
    ) -> impl Future<Output = Result<AppendResult>> + Send;

    /// Reads one stream.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) when the store fails.
    fn read_stream(
        &self,
        stream_id: &str,
        read: ReadStream,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send;

    /// Reads the global log after a position, in position order.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) when the store fails.
    fn read_all(&self, read: ReadAll) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send;

    /// Position of the last event a reader can see now ([`Position::START`] when empty).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) when the store fails.
    fn head(&self) -> impl Future<Output = Result<Position>> + Send;

    /// The event `event_id` if it is stored in stream `stream_id`. A repository looks up a
    /// command's first event this way to answer a repeated command with its recorded
    /// outcome. The default reads the whole stream; stores override it with an index.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) when the store fails.
    fn event_by_id(
        &self,
        stream_id: &str,
        event_id: uuid::Uuid,
    ) -> impl Future<Output = Result<Option<RecordedEvent>>> + Send {
        async move {
            let events = self.read_stream(stream_id, ReadStream::all()).await?;
            Ok(events.into_iter().find(|e| e.event_id == event_id))
        }
    }

    /// How many committed events readers cannot see yet because an older transaction is
    /// still open (the horizon lag; 0 for stores without one). Against [`head`] alone a
    /// stalled horizon would look like "caught up".
    ///
    /// [`head`]: EventStore::head
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) when the store fails.
    fn held_back(&self) -> impl Future<Output = Result<u64>> + Send {
        async { Ok(0) }
    }

    /// The log position to read after to see every event recorded at or after `at`
    /// ([`Position::START`] when that is all of them). Reading after it may also return a
    /// few events recorded before `at`: `recorded_at` is the appending transaction's start
    /// time, not its commit, so it is not monotone in log order; but every event up to the
    /// returned position was recorded before `at`. Where the log ends before `at`, the
    /// head (read after it from then on: only newer events).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) when the store fails.
    ///
    /// The default scans the log; stores override it with an index.
    fn position_at(
        &self,
        at: chrono::DateTime<chrono::Utc>,
    ) -> impl Future<Output = Result<Position>> + Send {
        async move {
            let (mut after, mut before) = (Position::START, Position::START);
            loop {
                let page = self.read_all(ReadAll::after(after).limit(1_000)).await?;
                let Some(last) = page.last() else {
                    return self.head().await;
                };
                for event in &page {
                    if event.recorded_at >= at {
                        return Ok(before);
                    }
                    before = event.position;
                }
                after = last.position;
            }
        }
    }

    /// When the event at `position` was recorded (`None` for [`Position::START`], a
    /// position no event has, or a store that does not say). Status reports use it for the
    /// time of the head's and a checkpoint's event.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) when the store fails.
    fn recorded_at(
        &self,
        position: Position,
    ) -> impl Future<Output = Result<Option<chrono::DateTime<chrono::Utc>>>> + Send {
        let _ = position;
        async { Ok(None) }
    }

    /// The stream's current version (0 when it does not exist).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) when the store fails.
    fn stream_version(&self, stream_id: &str) -> impl Future<Output = Result<u64>> + Send;

    /// Waits until the head moves past `after` or `timeout` passes; returns whether there
    /// are events after `after`. A wake-up is a hint: callers read to find out what is new.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) when the store fails.
    fn wait_for_events(
        &self,
        after: Position,
        timeout: Duration,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Appends to one stream.
    ///
    /// # Errors
    ///
    /// As [`append`](EventStore::append).
    fn append_to_stream(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<AppendResult>> + Send {
        self.append(vec![StreamAppend::new(stream_id, expected, events)])
    }
}
