use std::future::Future;

use chrono::{DateTime, Utc};

use crate::{Encoding, EventStore, ReadStream, RecordedEvent, Result};

/// A cached fold of a stream up to `stream_version`. Disposable: a missing, stale or
/// undecodable snapshot means replaying from events, never an error.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The stream it summarizes.
    pub stream_id: String,
    /// Persisted aggregate type name ([`Aggregate::TYPE`](crate::Aggregate::TYPE)).
    pub aggregate_type: String,
    /// The aggregate's [`SNAPSHOT_VERSION`](crate::Aggregate::SNAPSHOT_VERSION) when taken.
    pub schema_version: u32,
    /// Last stream version folded into `payload`.
    pub stream_version: u64,
    /// How `payload` is encoded.
    pub encoding: Encoding,
    /// The encoded state.
    pub payload: Vec<u8>,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
}

/// Stores snapshots keyed by stream, aggregate type and snapshot schema version.
pub trait SnapshotStore: Send + Sync {
    /// The snapshot for this key, if any.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) when the store fails.
    fn load_snapshot(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        schema_version: u32,
    ) -> impl Future<Output = Result<Option<Snapshot>>> + Send;

    /// Stores `snapshot` unless one at the same or a later stream version is already there
    /// for its key; returns whether it was stored.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) when the store fails.
    fn save_snapshot(&self, snapshot: Snapshot) -> impl Future<Output = Result<bool>> + Send;

    /// The snapshot for this key (if any) and the stream's events after it. Backends that
    /// can do it in one round trip override this.
    ///
    /// A snapshot that claims a version past the stream's end (written for events that were
    /// never committed, or left from a stream that was recreated) is not returned: the
    /// whole stream comes back instead, so the aggregate is replayed rather than stuck at
    /// a version no append can match.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) when the store fails.
    fn load_stream(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        schema_version: u32,
    ) -> impl Future<Output = Result<(Option<Snapshot>, Vec<RecordedEvent>)>> + Send
    where
        Self: EventStore,
    {
        async move {
            let snapshot = self
                .load_snapshot(stream_id, aggregate_type, schema_version)
                .await?;
            let from = snapshot.as_ref().map_or(1, |s| s.stream_version + 1);
            let events = self
                .read_stream(stream_id, ReadStream::forward_from(from))
                .await?;
            if snapshot.is_some() && events.is_empty() {
                let version = self.stream_version(stream_id).await?;
                if snapshot
                    .as_ref()
                    .is_some_and(|s| s.stream_version > version)
                {
                    let events = self.read_stream(stream_id, ReadStream::all()).await?;
                    return Ok((None, events));
                }
            }
            Ok((snapshot, events))
        }
    }

    /// As [`load_stream`](SnapshotStore::load_stream), for folding into an aggregate: the
    /// events carry what decoding and its errors need (stream, version, position, type,
    /// schema version, encoding, payload), and may leave the rest empty (a nil
    /// `event_id`, `recorded_at` at the Unix epoch, no `metadata`). The repository loads
    /// aggregates with it. Backends where those columns cost something to read override it
    /// (PostgreSQL: the metadata's JSON is most of a row); the default is `load_stream`.
    ///
    /// # Errors
    ///
    /// As [`load_stream`](SnapshotStore::load_stream).
    fn load_stream_to_fold(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        schema_version: u32,
    ) -> impl Future<Output = Result<(Option<Snapshot>, Vec<RecordedEvent>)>> + Send
    where
        Self: EventStore,
    {
        self.load_stream(stream_id, aggregate_type, schema_version)
    }
}
