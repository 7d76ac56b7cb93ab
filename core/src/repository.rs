use std::{marker::PhantomData, sync::Arc};

use serde::{de::DeserializeOwned, Serialize};
use tracing::{debug, field, warn, Instrument};

use uuid::Uuid;

use self::cache::AggregateCache;
pub use self::{as_of::AsOf, once::command_event_id};
use crate::{
    decode_event, encode_event, Aggregate, Encoding, Envelope, Error, EventStore, ExpectedVersion,
    Metadata, Position, ReadStream, RecordedEvent, Result, Snapshot, SnapshotStore, Upcasters,
};

mod as_of;
mod cache;
mod once;

/// Where a command starts: from the loaded aggregate, or (a creating command) from a new
/// one, without reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    Load,
    New,
}

/// How a [`Repository`] snapshots, retries and encodes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepositoryOptions {
    /// Write a snapshot each time a stream's version crosses a multiple of this (`None`:
    /// never). Default: every 25 events.
    ///
    /// A snapshot costs about one append (an upsert of one row per aggregate: snapshots do
    /// not pile up); each event read after it costs a few microseconds (on PostgreSQL,
    /// about 1 % of an append). With every `n` events, a command pays `1/n` of a snapshot
    /// write and reads `n/2` events on average, which is cheapest around `n` = 15-30;
    /// measured on the bench's hot aggregate, 25 instead of 100 made a command about 15 %
    /// faster. Raise it for aggregates whose state is large next to their events.
    pub snapshot_every: Option<u64>,
    /// How many times a command is re-run on a fresh load after an optimistic-concurrency
    /// conflict before the conflict is returned. Default: 5.
    pub max_conflict_retries: u32,
    /// Encoding of new events. Default: JSON.
    pub event_encoding: Encoding,
    /// Encoding of snapshots. Default: postcard.
    pub snapshot_encoding: Encoding,
}

impl Default for RepositoryOptions {
    fn default() -> Self {
        Self {
            snapshot_every: Some(25),
            max_conflict_retries: 5,
            event_encoding: Encoding::Json,
            snapshot_encoding: Encoding::Postcard,
        }
    }
}

impl RepositoryOptions {
    /// Snapshot every `n` events (`None` or `Some(0)`: never).
    #[must_use]
    pub fn snapshot_every(mut self, n: Option<u64>) -> Self {
        self.snapshot_every = n.filter(|n| *n > 0);
        self
    }

    /// Retry a command this many times on conflict.
    #[must_use]
    pub fn max_conflict_retries(mut self, retries: u32) -> Self {
        self.max_conflict_retries = retries;
        self
    }

    /// Encode new events with `encoding`.
    #[must_use]
    pub fn event_encoding(mut self, encoding: Encoding) -> Self {
        self.event_encoding = encoding;
        self
    }
}

/// An aggregate's state as loaded from its stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded<A> {
    /// The folded state.
    pub state: A,
    /// The stream version the state reflects (0: no stream yet).
    pub version: u64,
    /// The version of the snapshot the load started from, if one was used.
    pub from_snapshot: Option<u64>,
}

/// What a successful command did.
#[derive(Debug)]
pub struct Executed<A: Aggregate> {
    /// State after the new events.
    pub state: A,
    /// Stream version after the append.
    pub version: u64,
    /// The events the command produced (empty when it decided nothing happens).
    pub events: Vec<A::Event>,
    /// Global position of the last new event (`None` when nothing was appended).
    pub position: Option<Position>,
    /// How many conflicts were retried (not counting the one retry of a command decided on
    /// a cached state that was out of date: see [`Repository::with_cache`]).
    pub retries: u32,
    /// The command (by its id, see [`Repository::execute_once`]) had been applied before:
    /// `events`, `version` and `position` are that application's, recorded in the stream,
    /// and `state` is the aggregate's current state. Nothing was decided or appended now.
    pub repeated: bool,
}

/// Why a command did not succeed: the aggregate said no, or the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecuteError<E> {
    /// The aggregate rejected the command (its own domain error).
    #[error("command rejected: {0}")]
    Rejected(#[source] E),
    /// Loading or appending failed, including a conflict that outlived the retries.
    #[error(transparent)]
    Store(#[from] Error),
}

impl<E> ExecuteError<E> {
    /// The domain error, if the aggregate rejected the command.
    pub fn rejection(&self) -> Option<&E> {
        match self {
            ExecuteError::Rejected(e) => Some(e),
            ExecuteError::Store(_) => None,
        }
    }
}

/// Loads aggregates from a store and executes commands against them.
///
/// A command runs as: load (latest snapshot plus the events after it), `handle`, append with
/// the loaded version as the expected version; on a conflict it reloads and retries up to
/// [`RepositoryOptions::max_conflict_retries`] times, and it snapshots per
/// [`RepositoryOptions::snapshot_every`]. Streams are named `"{Aggregate::TYPE}-{id}"`.
/// With [`with_cache`](Repository::with_cache), a command on a recently used aggregate
/// skips the load.
///
/// # Example
///
/// ```
/// # use annals_core::{Aggregate, DomainEvent, Repository};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: u64 }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # enum CounterEvent { #[serde(rename = "incremented")] Incremented { by: u64 } }
/// # impl DomainEvent for CounterEvent {}
/// # impl Aggregate for Counter {
/// #     const TYPE: &'static str = "counter";
/// #     type Command = u64; type Event = CounterEvent; type Error = std::convert::Infallible;
/// #     fn handle(&self, by: u64) -> Result<Vec<CounterEvent>, Self::Error> { Ok(vec![CounterEvent::Incremented { by }]) }
/// #     fn apply(&mut self, CounterEvent::Incremented { by }: &CounterEvent) { self.value += by }
/// # }
/// async fn bump<S>(store: S) -> Result<u64, Box<dyn std::error::Error>>
/// where
///     S: annals_core::EventStore + annals_core::SnapshotStore,
/// {
///     let counters = Repository::<Counter, _>::new(store);
///     counters.execute("c-1", 2).await?;
///     let done = counters.execute("c-1", 3).await?;
///     assert_eq!(done.version, 2);
///     Ok(done.state.value)
/// }
/// # fn main() {}
/// ```
#[derive(Debug)]
pub struct Repository<A, S> {
    store: S,
    options: RepositoryOptions,
    upcasters: Arc<Upcasters>,
    cache: Option<Arc<AggregateCache<A>>>,
    aggregate: PhantomData<fn() -> A>,
}

impl<A, S: Clone> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            options: self.options.clone(),
            upcasters: Arc::clone(&self.upcasters),
            cache: self.cache.clone(),
            aggregate: PhantomData,
        }
    }
}

impl<A, S> Repository<A, S>
where
    A: Aggregate + Serialize + DeserializeOwned,
    S: EventStore + SnapshotStore,
{
    /// A repository with default options over `store`.
    pub fn new(store: S) -> Self {
        Self {
            store,
            options: RepositoryOptions::default(),
            upcasters: Arc::new(Upcasters::new()),
            cache: None,
            aggregate: PhantomData,
        }
    }

    /// Replaces the options.
    #[must_use]
    pub fn with_options(mut self, options: RepositoryOptions) -> Self {
        self.options = options;
        self
    }

    /// Uses these upcasters when decoding events.
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = Arc::new(upcasters);
        self
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The stream id of aggregate `id`: `"{TYPE}-{id}"`.
    pub fn stream_id(id: &str) -> String {
        format!("{}-{id}", A::TYPE)
    }

    /// Loads aggregate `id` (its default state, version 0, if it has no events).
    ///
    /// # Errors
    ///
    /// Store errors, and [`Error::UnknownEventType`] / [`Error::Decode`] /
    /// [`Error::Upcast`] for events this code cannot read.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>> {
        let stream_id = Self::stream_id(id);
        self.load_stream(&stream_id)
            .instrument(tracing::info_span!("annals.load", aggregate = A::TYPE, stream = %stream_id, version = field::Empty))
            .await
    }

    /// Every event of aggregate `id`, decoded, oldest first.
    ///
    /// # Errors
    ///
    /// As [`load`](Repository::load).
    pub async fn events(&self, id: &str) -> Result<Vec<Envelope<A::Event>>> {
        let events = self
            .store
            .read_stream(&Self::stream_id(id), ReadStream::all())
            .await?;
        events
            .iter()
            .map(|e| decode_event(e, &self.upcasters))
            .collect()
    }

    /// Runs `command` against aggregate `id` and appends what it decides.
    ///
    /// # Errors
    ///
    /// [`ExecuteError::Rejected`] with the aggregate's error, or [`ExecuteError::Store`]
    /// (a conflict that outlived the retries has [`Error::is_conflict`]).
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
    ) -> Result<Executed<A>, ExecuteError<A::Error>>
    where
        A::Command: Clone,
    {
        self.execute_with_metadata(id, command, Metadata::default())
            .await
    }

    /// Like [`execute`](Repository::execute), stamping `metadata` on every new event. Where
    /// `metadata` has no causation or correlation id, the command gets an id (UUID v7) that
    /// fills them; inside a traced span (feature `otel`) the store records its context.
    ///
    /// # Errors
    ///
    /// As [`execute`](Repository::execute).
    pub async fn execute_with_metadata(
        &self,
        id: &str,
        command: A::Command,
        metadata: Metadata,
    ) -> Result<Executed<A>, ExecuteError<A::Error>>
    where
        A::Command: Clone,
    {
        self.execute_plain(id, command, metadata, Start::Load).await
    }

    /// Runs `command` on aggregate `id` as its first command: decided against the
    /// default state and appended with [`ExpectedVersion::NoStream`], in one round trip
    /// (no load). When the stream exists already, or a new aggregate would refuse or ignore
    /// the command, it runs as [`execute`](Repository::execute) does (load, decide,
    /// append), so the aggregate answers as it would (say, "already open").
    ///
    /// # Errors
    ///
    /// As [`execute`](Repository::execute).
    pub async fn create(
        &self,
        id: &str,
        command: A::Command,
    ) -> Result<Executed<A>, ExecuteError<A::Error>>
    where
        A::Command: Clone,
    {
        self.execute_plain(id, command, Metadata::default(), Start::New)
            .await
    }

    /// A command without an id: it gets one of its own for the causal chain (not for
    /// idempotency: see execute_once), the events' causation, and their correlation unless
    /// given.
    async fn execute_plain(
        &self,
        id: &str,
        command: A::Command,
        mut metadata: Metadata,
        start: Start,
    ) -> Result<Executed<A>, ExecuteError<A::Error>>
    where
        A::Command: Clone,
    {
        let command_id = Uuid::now_v7();
        metadata.causation_id = metadata.causation_id.or(Some(command_id));
        metadata.correlation_id = metadata.correlation_id.or(Some(command_id));
        let stream_id = Self::stream_id(id);
        let span = tracing::info_span!(
            "annals.execute",
            aggregate = A::TYPE,
            stream = %stream_id,
            create = start == Start::New,
            version = field::Empty,
            retries = field::Empty,
            cached = field::Empty,
        );
        self.run(&stream_id, command, metadata, None, start)
            .instrument(span)
            .await
    }

    /// Counts a command's outcome (`annals_commands_total{aggregate, outcome}`).
    fn count(result: &Result<Executed<A>, ExecuteError<A::Error>>) {
        let outcome = match result {
            Ok(done) if done.repeated => "repeated",
            Ok(_) => "ok",
            Err(ExecuteError::Rejected(_)) => "rejected",
            Err(ExecuteError::Store(e)) if e.is_conflict() => "conflict",
            Err(_) => "error",
        };
        metrics::counter!("annals_commands_total", "aggregate" => A::TYPE, "outcome" => outcome)
            .increment(1);
    }

    async fn run(
        &self,
        stream_id: &str,
        command: A::Command,
        metadata: Metadata,
        command_id: Option<Uuid>,
        start: Start,
    ) -> Result<Executed<A>, ExecuteError<A::Error>>
    where
        A::Command: Clone,
    {
        let result = self
            .decide(stream_id, command, metadata, command_id, start)
            .await;
        if let Err(ExecuteError::Store(_)) = &result {
            // The stream may have changed in ways this process does not know.
            self.cache_evict(stream_id);
        }
        Self::count(&result);
        result
    }

    async fn decide(
        &self,
        stream_id: &str,
        command: A::Command,
        metadata: Metadata,
        command_id: Option<Uuid>,
        mut start: Start,
    ) -> Result<Executed<A>, ExecuteError<A::Error>>
    where
        A::Command: Clone,
    {
        let mut retries = 0;
        // The cache serves a command's first attempt only; every later one reads the stream.
        let mut use_cache = self.cache.is_some();
        loop {
            let ticket = self.cache_ticket(stream_id);
            let cached = if std::mem::take(&mut use_cache) {
                let cached = self.cached(stream_id);
                tracing::Span::current().record("cached", cached.is_some());
                cached
            } else {
                None
            };
            let from_cache = cached.is_some();
            if from_cache {
                // This process has seen the stream: decide on what it saw, not blindly.
                start = Start::Load;
            }
            let fresh = start == Start::New;
            let (mut state, version) = match cached {
                Some(cached) => cached,
                None if fresh => (A::default(), 0),
                None => {
                    let loaded = self.load_stream(stream_id).await?;
                    self.cache_put(stream_id, &loaded.state, loaded.version, ticket);
                    (loaded.state, loaded.version)
                }
            };
            if let Some(command_id) = command_id {
                if let Some(done) = self.applied(stream_id, command_id).await? {
                    if from_cache {
                        // Answer with the current state, which the cached one may be behind.
                        Self::count_cache("rechecked");
                        continue;
                    }
                    return Ok(Executed {
                        state,
                        version: done.version,
                        events: done.events,
                        position: Some(done.position),
                        retries,
                        repeated: true,
                    });
                }
            }
            let decided = {
                let _handle = tracing::debug_span!("annals.handle", version).entered();
                state.handle(command.clone())
            };
            // Refused, or nothing to do, by a new aggregate or a cached state: the stream may
            // be ahead of it; decide on its real state.
            let redecide = fresh || from_cache;
            let events = match decided {
                Ok(events) if !(redecide && events.is_empty()) => events,
                Err(rejection) if !redecide => return Err(ExecuteError::Rejected(rejection)),
                _ => {
                    if from_cache {
                        Self::count_cache("rechecked");
                    }
                    start = Start::Load;
                    continue;
                }
            };
            if events.is_empty() {
                return Ok(Executed {
                    state,
                    version,
                    events,
                    position: None,
                    retries,
                    repeated: false,
                });
            }
            let new_events = events
                .iter()
                .zip(0u32..)
                .map(|(e, index)| {
                    let mut event = encode_event(e, self.options.event_encoding)?
                        .with_metadata(metadata.clone());
                    if let Some(command_id) = command_id {
                        event.event_id = command_event_id(command_id, index);
                    }
                    Ok(event)
                })
                .collect::<Result<Vec<_>>>()?;
            let expected = if fresh {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(version)
            };
            let appended = self
                .store
                .append_to_stream(stream_id, expected, new_events)
                .await;
            match appended {
                Ok(appended) => {
                    let new_version = appended.version();
                    // Otherwise the store answered with an earlier append of these events'
                    // ids: another attempt of this command, maybe decided on another state.
                    let as_decided = new_version == version + events.len() as u64;
                    if !as_decided {
                        self.cache_evict(stream_id);
                        if command_id.is_some() && retries < self.options.max_conflict_retries {
                            debug!("the command was applied concurrently; reading its outcome");
                            retries += 1;
                            start = Start::Load;
                            continue;
                        }
                    }
                    for event in &events {
                        state.apply(event);
                    }
                    if as_decided {
                        self.cache_put(stream_id, &state, new_version, ticket);
                    }
                    let span = tracing::Span::current();
                    span.record("version", new_version);
                    span.record("retries", retries);
                    self.maybe_snapshot(stream_id, &state, version, new_version)
                        .await;
                    return Ok(Executed {
                        state,
                        version: new_version,
                        events,
                        position: Some(appended.position),
                        retries,
                        repeated: false,
                    });
                }
                Err(e) => {
                    // The stream is not (or no longer known to be) at `version`.
                    self.cache_evict_stale(stream_id, version);
                    match e {
                        // Another attempt of the same command got there first (a retry
                        // racing the original): answer with what it recorded.
                        Error::DuplicateEvent { .. }
                            if command_id.is_some()
                                && retries < self.options.max_conflict_retries =>
                        {
                            debug!("the command was applied concurrently; reading its outcome");
                            retries += 1;
                        }
                        // The cache was behind the stream: reload (not a retry of a race).
                        e if e.is_conflict() && from_cache => {
                            Self::count_cache("stale");
                            debug!(error = %e, "cached state out of date, reloading");
                        }
                        // It exists: load it (not a retry of a race).
                        e if e.is_conflict() && fresh => start = Start::Load,
                        e if e.is_conflict() && retries < self.options.max_conflict_retries => {
                            retries += 1;
                            metrics::counter!("annals_commands_total", "aggregate" => A::TYPE, "outcome" => "conflict_retried")
                                .increment(1);
                            debug!(retries, error = %e, "conflict, reloading and retrying");
                        }
                        e => return Err(e.into()),
                    }
                }
            }
        }
    }

    async fn load_stream(&self, stream_id: &str) -> Result<Loaded<A>> {
        let (snapshot, events) = self
            .store
            .load_stream_to_fold(stream_id, A::TYPE, A::SNAPSHOT_VERSION)
            .await?;
        let (state, version, from_snapshot) = match snapshot {
            Some(s) => match s.encoding.decode::<A>(&s.payload) {
                Ok(state) => (state, s.stream_version, Some(s.stream_version)),
                Err(error) => {
                    warn!(%error, stream = stream_id, "undecodable snapshot, replaying from events");
                    return self.replay(stream_id).await;
                }
            },
            None => (A::default(), 0, None),
        };
        if events
            .first()
            .is_some_and(|e| e.stream_version != version + 1)
        {
            warn!(
                stream = stream_id,
                "snapshot does not line up with the stream, replaying"
            );
            return self.replay(stream_id).await;
        }
        let loaded = self.fold(state, version, from_snapshot, &events)?;
        tracing::Span::current().record("version", loaded.version);
        Ok(loaded)
    }

    async fn replay(&self, stream_id: &str) -> Result<Loaded<A>> {
        let events = self.store.read_stream(stream_id, ReadStream::all()).await?;
        self.fold(A::default(), 0, None, &events)
    }

    fn fold(
        &self,
        mut state: A,
        mut version: u64,
        from_snapshot: Option<u64>,
        events: &[RecordedEvent],
    ) -> Result<Loaded<A>> {
        for raw in events {
            let event = crate::codec::decode_value::<A::Event>(raw, &self.upcasters)?;
            state.apply(&event);
            version = raw.stream_version;
        }
        Ok(Loaded {
            state,
            version,
            from_snapshot,
        })
    }

    async fn maybe_snapshot(&self, stream_id: &str, state: &A, before: u64, after: u64) {
        let Some(every) = self.options.snapshot_every else {
            return;
        };
        if every == 0 || before / every == after / every {
            return;
        }
        let payload = match self.options.snapshot_encoding.encode(state) {
            Ok(payload) => payload,
            Err(error) => {
                warn!(%error, stream = stream_id, "cannot encode snapshot, skipping");
                return;
            }
        };
        let snapshot = Snapshot {
            stream_id: stream_id.to_owned(),
            aggregate_type: A::TYPE.to_owned(),
            schema_version: A::SNAPSHOT_VERSION,
            stream_version: after,
            encoding: self.options.snapshot_encoding,
            payload,
            taken_at: chrono::Utc::now(),
        };
        let saved = self
            .store
            .save_snapshot(snapshot)
            .instrument(tracing::debug_span!(
                "annals.snapshot",
                stream = stream_id,
                version = after
            ))
            .await;
        if let Err(error) = saved {
            warn!(%error, stream = stream_id, "snapshot not saved (it is only a cache)");
        }
    }
}
