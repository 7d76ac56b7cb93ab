use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use annals_core::{
    check_appends, check_repeat, AppendResult, Direction, Error, EventStore, Position, ReadAll,
    ReadStream, RecordedEvent, Repeat, Result, Snapshot, SnapshotStore, StoredAt, StreamAppend,
    StreamVersion,
};
use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// The in-memory store. Cheap to clone: clones share the same data.
///
/// Appends take one lock for the whole batch, so an append is atomic and the global log
/// grows in commit order: a reader following [`EventStore::read_all`] can never skip an
/// event, and sees each stream in version order. Positions are `(commit number,
/// sequence)`. Stream ids are checked as on every store
/// ([`check_stream_id`](annals_core::check_stream_id)), and appends are idempotent by event
/// id, as in PostgreSQL.
#[derive(Clone, Debug)]
pub struct MemoryEventStore {
    inner: Arc<Mutex<Inner>>,
    head: Arc<watch::Sender<Position>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The global log, in position order.
    log: Vec<RecordedEvent>,
    /// Indexes into `log` of each stream's events, in version order.
    streams: HashMap<String, Vec<usize>>,
    /// Every stored event id, with its index in `log` (ids are unique, as in Postgres).
    event_ids: HashMap<uuid::Uuid, usize>,
    /// Keyed by (stream, aggregate type, schema version).
    snapshots: HashMap<(String, String, u32), Snapshot>,
    commits: u64,
}

impl Default for MemoryEventStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryEventStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            head: Arc::new(watch::channel(Position::START).0),
        }
    }

    /// How many events the store holds.
    pub fn len(&self) -> usize {
        self.lock().log.len()
    }

    /// True when the store holds no events.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied append (appends are
        // checked before they mutate), so a poisoned lock still guards consistent data.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn version(&self, stream_id: &str) -> u64 {
        self.streams.get(stream_id).map_or(0, |s| s.len() as u64)
    }

    /// The result of an earlier append that `appends` repeats, if it does.
    fn repeated(&self, appends: &[StreamAppend]) -> Result<Option<AppendResult>> {
        let stored: HashMap<uuid::Uuid, StoredAt> = appends
            .iter()
            .flat_map(|a| &a.events)
            .filter_map(|e| {
                let event = &self.log[*self.event_ids.get(&e.event_id)?];
                let stream = self.streams.get(&event.stream_id)?;
                // Versions are 1-based: version v is at index v - 1 of its stream.
                let commit_at = |version: u64| {
                    let index = usize::try_from(version).ok()?.checked_sub(1)?;
                    Some(self.log[*stream.get(index)?].position.commit())
                };
                let at = StoredAt {
                    stream_id: event.stream_id.clone(),
                    stream_version: event.stream_version,
                    position: event.position,
                    previous_commit: commit_at(event.stream_version - 1),
                    next_commit: commit_at(event.stream_version + 1),
                };
                Some((e.event_id, at))
            })
            .collect();
        let Repeat::Same { position, versions } = check_repeat(appends, &stored)? else {
            return Ok(None);
        };
        let streams = appends
            .iter()
            .zip(versions)
            .map(|(append, version)| StreamVersion {
                stream_id: append.stream_id.clone(),
                // A stream the append only checked: its version as of that commit.
                version: version.unwrap_or_else(|| {
                    self.streams.get(&append.stream_id).map_or(0, |indexes| {
                        indexes
                            .iter()
                            .take_while(|&&i| self.log[i].position.commit() <= position.commit())
                            .count() as u64
                    })
                }),
            })
            .collect();
        Ok(Some(AppendResult { position, streams }))
    }

    fn check_versions(&self, appends: &[StreamAppend]) -> Result<()> {
        for append in appends {
            let actual = self.version(&append.stream_id);
            if !append.expected.matches(actual) {
                return Err(Error::Conflict {
                    stream_id: append.stream_id.clone(),
                    expected: append.expected,
                    actual,
                });
            }
        }
        Ok(())
    }

    fn head(&self) -> Position {
        self.log.last().map_or(Position::START, |e| e.position)
    }
}

impl MemoryEventStore {
    fn append_now(&self, appends: Vec<StreamAppend>) -> Result<AppendResult> {
        check_appends(&appends)?;
        let mut inner = self.lock();
        if let Some(original) = inner.repeated(&appends)? {
            return Ok(original);
        }
        inner.check_versions(&appends)?;
        let recorded_at = chrono::Utc::now();
        let commit = inner.commits + 1;
        let mut streams = Vec::with_capacity(appends.len());
        let mut appended = false;
        for append in appends {
            let mut version = inner.version(&append.stream_id);
            for event in append.events {
                version += 1;
                let index = inner.log.len();
                let position = Position::new(commit, index as u64 + 1);
                inner.log.push(RecordedEvent {
                    event_id: event.event_id,
                    stream_id: append.stream_id.clone(),
                    stream_version: version,
                    position,
                    event_type: event.event_type,
                    schema_version: event.schema_version,
                    recorded_at,
                    metadata: {
                        let mut metadata = event.metadata;
                        annals_core::trace::stamp(&mut metadata);
                        metadata
                    },
                    encoding: event.encoding,
                    payload: event.payload,
                });
                inner.event_ids.insert(event.event_id, index);
                inner
                    .streams
                    .entry(append.stream_id.clone())
                    .or_default()
                    .push(index);
                appended = true;
            }
            streams.push(StreamVersion {
                stream_id: append.stream_id,
                version,
            });
        }
        if appended {
            inner.commits = commit;
        }
        let position = inner.head();
        drop(inner);
        if appended {
            self.head.send_replace(position);
        }
        Ok(AppendResult { position, streams })
    }
}

impl EventStore for MemoryEventStore {
    #[tracing::instrument(name = "annals.append", skip_all, fields(store = "memory", streams = appends.len()))]
    async fn append(&self, appends: Vec<StreamAppend>) -> Result<AppendResult> {
        let started = std::time::Instant::now();
        let appended = self.append_now(appends);
        metrics::histogram!("annals_append_duration_seconds", "store" => "memory")
            .record(started.elapsed().as_secs_f64());
        appended
    }

    async fn read_stream(&self, stream_id: &str, read: ReadStream) -> Result<Vec<RecordedEvent>> {
        let inner = self.lock();
        let Some(indexes) = inner.streams.get(stream_id) else {
            return Ok(Vec::new());
        };
        let limit = read.limit.unwrap_or(usize::MAX);
        // Versions are 1-based: version v is at index v - 1.
        let from = usize::try_from(read.from).unwrap_or(usize::MAX);
        let events: Vec<RecordedEvent> = match read.direction {
            Direction::Forward => indexes
                .iter()
                .skip(from.saturating_sub(1))
                .take(limit)
                .map(|&i| inner.log[i].clone())
                .collect(),
            Direction::Backward => indexes
                .iter()
                .take(from)
                .rev()
                .take(limit)
                .map(|&i| inner.log[i].clone())
                .collect(),
        };
        Ok(events)
    }

    async fn read_all(&self, read: ReadAll) -> Result<Vec<RecordedEvent>> {
        let inner = self.lock();
        let start = inner.log.partition_point(|e| e.position <= read.after);
        let wanted = |e: &&RecordedEvent| {
            read.event_types
                .as_ref()
                .is_none_or(|types| types.contains(&e.event_type))
        };
        Ok(inner.log[start..]
            .iter()
            .filter(wanted)
            .take(read.limit)
            .cloned()
            .collect())
    }

    async fn head(&self) -> Result<Position> {
        Ok(self.lock().head())
    }

    async fn event_by_id(
        &self,
        stream_id: &str,
        event_id: uuid::Uuid,
    ) -> Result<Option<RecordedEvent>> {
        let inner = self.lock();
        Ok(inner
            .event_ids
            .get(&event_id)
            .map(|&i| &inner.log[i])
            .filter(|e| e.stream_id == stream_id)
            .cloned())
    }

    async fn position_at(&self, at: DateTime<Utc>) -> Result<Position> {
        let inner = self.lock();
        // Appends hold the store's lock, so recorded_at grows with the log here.
        let first = inner.log.partition_point(|e| e.recorded_at < at);
        Ok(match first.checked_sub(1) {
            Some(before) => inner.log[before].position,
            None => Position::START,
        })
    }

    async fn recorded_at(&self, position: Position) -> Result<Option<DateTime<Utc>>> {
        let inner = self.lock();
        Ok(inner
            .log
            .binary_search_by_key(&position, |e| e.position)
            .ok()
            .map(|i| inner.log[i].recorded_at))
    }

    async fn stream_version(&self, stream_id: &str) -> Result<u64> {
        Ok(self.lock().version(stream_id))
    }

    async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<bool> {
        let mut head = self.head.subscribe();
        let moved = tokio::time::timeout(timeout, head.wait_for(|head| *head > after)).await;
        // The sender lives as long as `self`, so `wait_for` cannot see it closed.
        Ok(matches!(moved, Ok(Ok(_))))
    }
}

impl SnapshotStore for MemoryEventStore {
    async fn load_snapshot(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        schema_version: u32,
    ) -> Result<Option<Snapshot>> {
        let key = (
            stream_id.to_owned(),
            aggregate_type.to_owned(),
            schema_version,
        );
        Ok(self.lock().snapshots.get(&key).cloned())
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<bool> {
        let key = (
            snapshot.stream_id.clone(),
            snapshot.aggregate_type.clone(),
            snapshot.schema_version,
        );
        let mut inner = self.lock();
        match inner.snapshots.get(&key) {
            Some(existing) if existing.stream_version >= snapshot.stream_version => Ok(false),
            _ => {
                inner.snapshots.insert(key, snapshot);
                Ok(true)
            }
        }
    }
}
