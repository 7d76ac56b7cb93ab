//! The aggregate cache: the states of a repository's most recently used streams, so that a
//! command on one of them goes straight to the append, with the cached version as the
//! expected version.
//!
//! Writes need no more than that: the store refuses an append decided on a state the stream
//! has moved past. Reads ([`Repository::load_cached`]) promise a little more: never older than
//! this process's own last successful command on the stream. Fills race with evictions (a
//! load that read version 6 may finish after a command stored version 7 and the entry was
//! evicted), so each fill carries a [`Ticket`]: the count of entries dropped in its key's
//! stripe, read before the store was asked. An entry that is present only ever moves to a
//! higher version; an absent key is filled only if nothing in its stripe was dropped since
//! the ticket was taken (an entry gone since then may have been newer), and a refused fill
//! counts as a drop itself (the version it carried is forgotten). A fill that gets in thus
//! began after every entry or fill of its key that was dropped, so it saw at least their
//! versions.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    hash::BuildHasher,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use serde::{de::DeserializeOwned, Serialize};
use tracing::{field, Instrument};

use super::{Loaded, Repository};
use crate::{Aggregate, EventStore, Result, SnapshotStore};

/// Drops are counted per stripe of keys: a drop holds back fills of its stripe's keys only.
const STRIPES: usize = 64;

/// A bounded least-recently-used map from stream id to (state, version).
pub(super) struct AggregateCache<A> {
    lru: Mutex<Lru<A>>,
    clone: fn(&A) -> A,
}

/// What a fill must present: its key's stripe's drop count when its read or append began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Ticket(u64);

struct Lru<A> {
    entries: HashMap<Arc<str>, Entry<A>>,
    /// Keys by last use, oldest first.
    order: BTreeMap<u64, Arc<str>>,
    tick: u64,
    drops: [u64; STRIPES],
    capacity: usize,
}

struct Entry<A> {
    key: Arc<str>,
    state: Arc<A>,
    version: u64,
    tick: u64,
}

impl<A> AggregateCache<A> {
    /// Holds up to `capacity` streams (at least one); `clone` copies a state out.
    pub(super) fn new(capacity: usize, clone: fn(&A) -> A) -> Self {
        let capacity = capacity.max(1);
        Self {
            lru: Mutex::new(Lru {
                entries: HashMap::with_capacity(capacity.min(4096)),
                order: BTreeMap::new(),
                tick: 0,
                drops: [0; STRIPES],
                capacity,
            }),
            clone,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Lru<A>> {
        // No user code runs under the lock (states are cloned and dropped outside it), so a
        // poisoned lock still guards consistent maps.
        self.lru.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Take before reading or appending to `key`; present it to [`put`](Self::put).
    pub(super) fn ticket(&self, key: &str) -> Ticket {
        let lru = self.lock();
        Ticket(lru.drops[lru.stripe(key)])
    }

    /// A copy of `key`'s state and its version, marking it used.
    pub(super) fn get(&self, key: &str) -> Option<(A, u64)> {
        let (state, version) = self
            .lock()
            .touch(key)
            .map(|e| (Arc::clone(&e.state), e.version))?;
        Some(((self.clone)(&state), version))
    }

    /// Records `state` as `key`'s at `version`, if that is newer than what is cached and
    /// `ticket` still admits it (see the module docs).
    pub(super) fn put(&self, key: &str, state: &A, version: u64, ticket: Ticket) {
        let state = Arc::new((self.clone)(state));
        let dropped = self.lock().put(key, state, version, ticket);
        // An aggregate's `Drop` is user code: run it outside the lock.
        drop(dropped);
    }

    /// Forgets `key`.
    pub(super) fn evict(&self, key: &str) {
        let dropped = self.lock().remove(key, u64::MAX);
        drop(dropped);
    }

    /// Forgets `key` if it is cached at `version` or older (the stream is known to be past
    /// `version`; a newer entry came from a later command and stays).
    pub(super) fn evict_stale(&self, key: &str, version: u64) {
        let dropped = self.lock().remove(key, version);
        drop(dropped);
    }
}

impl<A> Lru<A> {
    fn stripe(&self, key: &str) -> usize {
        let hash = self.entries.hasher().hash_one(key);
        usize::try_from(hash % STRIPES as u64).unwrap_or(0)
    }

    fn dropped(&mut self, key: &str) {
        let stripe = self.stripe(key);
        self.drops[stripe] = self.drops[stripe].wrapping_add(1);
    }

    fn touch(&mut self, key: &str) -> Option<&mut Entry<A>> {
        let entry = self.entries.get_mut(key)?;
        self.tick += 1;
        self.order.remove(&entry.tick);
        entry.tick = self.tick;
        self.order.insert(self.tick, Arc::clone(&entry.key));
        Some(entry)
    }

    /// Returns the state that leaves the cache, if any (the old one, the refused one, or the
    /// least recently used one).
    fn put(&mut self, key: &str, state: Arc<A>, version: u64, ticket: Ticket) -> Option<Arc<A>> {
        if let Some(entry) = self.touch(key) {
            if version > entry.version {
                entry.version = version;
                return Some(std::mem::replace(&mut entry.state, state));
            }
            return Some(state);
        }
        if self.drops[self.stripe(key)] != ticket.0 {
            self.dropped(key);
            return Some(state);
        }
        self.tick += 1;
        let key: Arc<str> = Arc::from(key);
        self.order.insert(self.tick, Arc::clone(&key));
        self.entries.insert(
            Arc::clone(&key),
            Entry {
                key,
                state,
                version,
                tick: self.tick,
            },
        );
        if self.entries.len() <= self.capacity {
            return None;
        }
        let (_, oldest) = self.order.pop_first()?;
        self.dropped(&oldest);
        self.entries.remove(&oldest).map(|e| e.state)
    }

    /// Removes `key` if it is cached at `version` or older.
    fn remove(&mut self, key: &str, version: u64) -> Option<Arc<A>> {
        if self.entries.get(key)?.version > version {
            return None;
        }
        let entry = self.entries.remove(key)?;
        self.order.remove(&entry.tick);
        self.dropped(key);
        Some(entry.state)
    }
}

impl<A> fmt::Debug for AggregateCache<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lru = self.lock();
        f.debug_struct("AggregateCache")
            .field("capacity", &lru.capacity)
            .field("len", &lru.entries.len())
            .finish_non_exhaustive()
    }
}

impl<A, S> Repository<A, S>
where
    A: Aggregate + Serialize + DeserializeOwned + Clone,
    S: EventStore + SnapshotStore,
{
    /// Keeps the state and version of the `capacity` most recently used aggregates in
    /// memory (0: no cache, the default). A command on a cached aggregate skips the load: it
    /// is decided on the cached state and appended with the cached version as the expected
    /// version, so a hot command is one round trip (plus the "already applied?" look-up for
    /// [`execute_once`](Repository::execute_once), and the snapshot write every
    /// [`snapshot_every`](crate::RepositoryOptions::snapshot_every) events, which still serve
    /// loads after an eviction). [`create`](Repository::create) on a cached aggregate decides
    /// on the cached state too. Clones of this repository share the cache; another
    /// repository, in this process or another, has its own.
    ///
    /// Use it for aggregates that take many commands in a row from one process (a hot
    /// account, a counter, a session), where this process is the only or the main writer of
    /// each stream. Where several processes write the same streams in turn, most cached
    /// states are out of date by the next command and the cache only adds a failed append.
    ///
    /// Memory: at most `capacity` states (one copy of each, plus its stream id), evicting the
    /// least recently used. A command clones the cached state twice (one to decide on, one
    /// to cache the result), so keep aggregates with large states out of it.
    ///
    /// Correctness does not depend on the cache being up to date:
    /// - every append decided from the cache carries the cached version as its expected
    ///   version, so the store refuses it if another process wrote the stream since; the
    ///   repository then drops the entry, reloads and decides again. That retry is not
    ///   counted in [`RepositoryOptions::max_conflict_retries`](crate::RepositoryOptions)
    ///   nor in [`Executed::retries`](crate::Executed) (it is the cache's staleness, not a
    ///   race);
    /// - a command the cached state rejects or finds nothing to do for, or a repeat found by
    ///   [`execute_once`](Repository::execute_once), is never answered from the cache: it is
    ///   decided again (or answered) on a fresh load, so a stale cache cannot refuse a
    ///   withdrawal that another process's deposit made possible;
    /// - the cache serves a command's first attempt only, and any store error drops the
    ///   stream's entry.
    ///
    /// [`load`](Repository::load) never reads the cache; [`load_cached`](Repository::load_cached)
    /// does.
    ///
    /// Metrics: `annals_cache_total{aggregate, outcome}`, outcome `hit`, `miss`, `stale` (a
    /// decision from the cache conflicted) or `rechecked` (one was rejected, empty or a
    /// repeat, and was redone on a load). Traces: the `annals.execute` span records `cached`.
    ///
    /// ```
    /// # use annals_core::{Aggregate, DomainEvent, Repository};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Default, Clone, Serialize, Deserialize)] struct Counter { value: u64 }
    /// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    /// # enum CounterEvent { #[serde(rename = "incremented")] Incremented { by: u64 } }
    /// # impl DomainEvent for CounterEvent {}
    /// # impl Aggregate for Counter {
    /// #     const TYPE: &'static str = "counter";
    /// #     type Command = u64; type Event = CounterEvent; type Error = std::convert::Infallible;
    /// #     fn handle(&self, by: u64) -> Result<Vec<CounterEvent>, Self::Error> { Ok(vec![CounterEvent::Incremented { by }]) }
    /// #     fn apply(&mut self, CounterEvent::Incremented { by }: &CounterEvent) { self.value += by }
    /// # }
    /// async fn hot<S>(store: S) -> Result<(), Box<dyn std::error::Error>>
    /// where
    ///     S: annals_core::EventStore + annals_core::SnapshotStore,
    /// {
    ///     // The 10,000 most recently used counters stay in memory.
    ///     let counters = Repository::<Counter, _>::new(store).with_cache(10_000);
    ///     counters.execute("c-1", 1).await?; // loads, appends, caches version 1
    ///     let done = counters.execute("c-1", 1).await?; // appends at version 1, no load
    ///     assert_eq!((done.version, done.state.value), (2, 2));
    ///     Ok(())
    /// }
    /// # fn main() {}
    /// ```
    #[must_use]
    pub fn with_cache(mut self, capacity: usize) -> Self {
        self.cache = (capacity > 0).then(|| Arc::new(AggregateCache::new(capacity, A::clone)));
        self
    }
}

impl<A, S> Repository<A, S>
where
    A: Aggregate + Serialize + DeserializeOwned,
    S: EventStore + SnapshotStore,
{
    /// Aggregate `id` from the cache (see [`with_cache`](Repository::with_cache)) if it is
    /// there, else loaded as by [`load`](Repository::load) and cached. Without a cache, the
    /// same as `load`.
    ///
    /// The state may be behind the stream: other processes (and other repositories in this
    /// one) may have written it since it was cached. It is never older than what this
    /// repository's own last successful command on it returned. Use it where a slightly old
    /// state is acceptable (a screen refreshed after the user's own command); use `load` to
    /// see everyone's writes. A state from the cache has [`Loaded::from_snapshot`] `None`.
    ///
    /// ```
    /// # use annals_core::{Aggregate, Repository};
    /// # async fn demo<A, S>(accounts: Repository<A, S>) -> annals_core::Result<()>
    /// # where A: Aggregate + serde::Serialize + serde::de::DeserializeOwned,
    /// #       S: annals_core::EventStore + annals_core::SnapshotStore {
    /// let shown = accounts.load_cached("ada").await?; // no read if "ada" is cached
    /// let exact = accounts.load("ada").await?; // always reads
    /// assert!(shown.version <= exact.version);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`load`](Repository::load).
    pub async fn load_cached(&self, id: &str) -> Result<Loaded<A>> {
        let Some(cache) = &self.cache else {
            return self.load(id).await;
        };
        let stream_id = Self::stream_id(id);
        let span = tracing::info_span!("annals.load", aggregate = A::TYPE, stream = %stream_id, version = field::Empty, cached = field::Empty);
        async {
            let ticket = cache.ticket(&stream_id);
            let cached = self.cached(&stream_id);
            tracing::Span::current().record("cached", cached.is_some());
            if let Some((state, version)) = cached {
                tracing::Span::current().record("version", version);
                return Ok(Loaded {
                    state,
                    version,
                    from_snapshot: None,
                });
            }
            let loaded = self.load_stream(&stream_id).await?;
            cache.put(&stream_id, &loaded.state, loaded.version, ticket);
            Ok(loaded)
        }
        .instrument(span)
        .await
    }

    /// The cached state and version of `stream_id`, counting a hit or a miss (`None`
    /// without a cache).
    pub(super) fn cached(&self, stream_id: &str) -> Option<(A, u64)> {
        let cached = self.cache.as_ref()?.get(stream_id);
        Self::count_cache(if cached.is_some() { "hit" } else { "miss" });
        cached
    }

    /// A ticket to cache what a read or an append about to begin finds (`None` without a
    /// cache).
    pub(super) fn cache_ticket(&self, stream_id: &str) -> Option<Ticket> {
        Some(self.cache.as_ref()?.ticket(stream_id))
    }

    /// Caches `state` as `stream_id`'s at `version`.
    pub(super) fn cache_put(
        &self,
        stream_id: &str,
        state: &A,
        version: u64,
        ticket: Option<Ticket>,
    ) {
        if let (Some(cache), Some(ticket)) = (&self.cache, ticket) {
            cache.put(stream_id, state, version, ticket);
        }
    }

    /// Forgets `stream_id`.
    pub(super) fn cache_evict(&self, stream_id: &str) {
        if let Some(cache) = &self.cache {
            cache.evict(stream_id);
        }
    }

    /// Forgets `stream_id` if it is cached at `version` or older.
    pub(super) fn cache_evict_stale(&self, stream_id: &str, version: u64) {
        if let Some(cache) = &self.cache {
            cache.evict_stale(stream_id, version);
        }
    }

    /// Counts a cache outcome (`annals_cache_total{aggregate, outcome}`).
    pub(super) fn count_cache(outcome: &'static str) {
        metrics::counter!("annals_cache_total", "aggregate" => A::TYPE, "outcome" => outcome)
            .increment(1);
    }
}
