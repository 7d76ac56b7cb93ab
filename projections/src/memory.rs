//! In-process read models: tables of serde rows, committed atomically with checkpoints.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
};

use annals_core::Position;
use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use crate::{
    CheckpointRecord, Checkpoints, DeadLetter, DeadLetters, Error, Leases, ProcessStore, Rebuilds,
    Result, Timer,
};

/// In-process checkpoints, dead letters, leases and read-model tables (rows are serde
/// values keyed by string). A batch's writes are staged in a [`MemoryTx`] and applied with
/// the checkpoint under one lock, so the in-memory engine keeps the same exactly-once
/// promise as Postgres. Cheap to clone: clones share the data.
///
/// ```
/// use annals_projections::MemoryCheckpoints;
///
/// let read = MemoryCheckpoints::new();
/// assert!(read.rows::<u64>("balances").is_empty());
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryCheckpoints {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    tables: HashMap<String, BTreeMap<String, Value>>,
    checkpoints: HashMap<String, CheckpointRecord>,
    dead_letters: BTreeMap<i64, DeadLetter>,
    next_dead_letter: i64,
    leases: HashMap<String, u64>,
    next_lease: u64,
    timers: BTreeMap<(String, String, String), Timer>,
    instances: HashMap<(String, String), bool>,
}

type Key = (String, String);

/// A staged unit of work on [`MemoryCheckpoints`]: reads see the committed tables plus
/// this transaction's own writes; nothing is visible to others until commit.
#[derive(Debug)]
pub struct MemoryTx {
    state: Arc<Mutex<State>>,
    writes: BTreeMap<Key, Option<Value>>,
    dead_letters: Vec<DeadLetter>,
    removed_dead_letters: Vec<i64>,
    /// The checkpoint this batch started from, checked again at commit.
    from: Position,
    /// For a transaction from `lock`: the subscription and where its checkpoint stood,
    /// checked again at commit (the in-memory stand-in for holding its lock).
    locked: Option<(String, Position)>,
}

impl MemoryTx {
    /// The row `key` of `table`, if any.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the stored row does not decode as `T`.
    pub fn get<T: DeserializeOwned>(&self, table: &str, key: &str) -> Result<Option<T>> {
        let staged = self.writes.get(&(table.to_owned(), key.to_owned()));
        let value = match staged {
            Some(value) => value.clone(),
            None => lock(&self.state)
                .tables
                .get(table)
                .and_then(|t| t.get(key))
                .cloned(),
        };
        value.map(decode).transpose()
    }

    /// Inserts or replaces the row `key` of `table`.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when `row` does not serialize.
    pub fn put<T: Serialize>(&mut self, table: &str, key: &str, row: &T) -> Result<()> {
        let value = serde_json::to_value(row).map_err(|e| {
            Error::Store(annals_core::Error::Encode {
                what: format!("row {table}/{key}"),
                source: e.into(),
            })
        })?;
        self.writes
            .insert((table.to_owned(), key.to_owned()), Some(value));
        Ok(())
    }

    /// Deletes the row `key` of `table`.
    pub fn delete(&mut self, table: &str, key: &str) {
        self.writes.insert((table.to_owned(), key.to_owned()), None);
    }
}

fn decode<T: DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value)
        .map_err(|e| Error::backend(format!("stored row does not decode: {e}")))
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Commits check everything before they mutate, so a poisoned lock still guards
    // consistent data.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryCheckpoints {
    /// Empty tables, no checkpoints.
    pub fn new() -> Self {
        Self::default()
    }

    /// One committed row.
    ///
    /// # Errors
    ///
    /// When the stored row does not decode as `T`.
    pub fn row<T: DeserializeOwned>(&self, table: &str, key: &str) -> Result<Option<T>> {
        let value = lock(&self.state)
            .tables
            .get(table)
            .and_then(|t| t.get(key))
            .cloned();
        value.map(decode).transpose()
    }

    /// Every committed row of `table` that decodes as `T`, by key.
    pub fn rows<T: DeserializeOwned>(&self, table: &str) -> BTreeMap<String, T> {
        let table = lock(&self.state)
            .tables
            .get(table)
            .cloned()
            .unwrap_or_default();
        table
            .into_iter()
            .filter_map(|(k, v)| serde_json::from_value(v).ok().map(|v| (k, v)))
            .collect()
    }

    fn tx(&self, from: Position) -> MemoryTx {
        MemoryTx {
            state: Arc::clone(&self.state),
            writes: BTreeMap::new(),
            dead_letters: Vec::new(),
            removed_dead_letters: Vec::new(),
            from,
            locked: None,
        }
    }

    fn position_of(state: &State, projection: &str) -> Position {
        state
            .checkpoints
            .get(projection)
            .map_or(Position::START, |c| c.position)
    }
}

fn apply(state: &mut State, tx: MemoryTx) {
    for ((table, key), value) in tx.writes {
        let rows = state.tables.entry(table).or_default();
        match value {
            Some(value) => rows.insert(key, value),
            None => rows.remove(&key),
        };
    }
    for id in tx.removed_dead_letters {
        state.dead_letters.remove(&id);
    }
    for letter in tx.dead_letters {
        // One letter per (subscription, event): recording it again updates it.
        let existing = state
            .dead_letters
            .values_mut()
            .find(|d| d.projection == letter.projection && d.event_id == letter.event_id);
        if let Some(existing) = existing {
            existing.error = letter.error;
            existing.attempts = letter.attempts;
            existing.failed_at = letter.failed_at;
            existing.parks_stream |= letter.parks_stream;
            continue;
        }
        // record_dead_letter gave it its id.
        state.dead_letters.insert(letter.id, letter);
    }
}

/// Holds a projection's lease on [`MemoryCheckpoints`] until dropped.
#[derive(Debug)]
pub struct MemoryLease {
    state: Arc<Mutex<State>>,
    projection: String,
    token: u64,
}

impl Drop for MemoryLease {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        if state.leases.get(&self.projection) == Some(&self.token) {
            state.leases.remove(&self.projection);
        }
    }
}

fn fenced(projection: &str, expected: Position, actual: Position) -> Error {
    Error::Fenced {
        projection: projection.to_owned(),
        expected,
        actual,
    }
}

impl Checkpoints for MemoryCheckpoints {
    type Tx = MemoryTx;

    async fn begin(&self, projection: &str, from: Position) -> Result<MemoryTx> {
        let actual = Self::position_of(&lock(&self.state), projection);
        if actual != from {
            return Err(fenced(projection, from, actual));
        }
        Ok(self.tx(from))
    }

    async fn lock(&self, projection: &str) -> Result<(MemoryTx, Position)> {
        let at = Self::position_of(&lock(&self.state), projection);
        let mut tx = self.tx(at);
        tx.locked = Some((projection.to_owned(), at));
        Ok((tx, at))
    }

    async fn commit(&self, tx: MemoryTx, projection: &str, to: Position) -> Result<()> {
        let mut state = lock(&self.state);
        let actual = Self::position_of(&state, projection);
        // Compare-and-set: a stale worker whose batch began before another worker moved
        // the checkpoint must not apply its batch.
        if actual != tx.from {
            return Err(fenced(projection, tx.from, actual));
        }
        apply(&mut state, tx);
        state.checkpoints.insert(
            projection.to_owned(),
            CheckpointRecord {
                projection: projection.to_owned(),
                position: to,
                halted: None,
                halted_attempts: 0,
                updated_at: Utc::now(),
            },
        );
        Ok(())
    }

    async fn begin_untracked(&self) -> Result<MemoryTx> {
        Ok(self.tx(Position::START))
    }

    async fn commit_untracked(&self, tx: MemoryTx) -> Result<()> {
        let mut state = lock(&self.state);
        if let Some((projection, at)) = &tx.locked {
            let actual = Self::position_of(&state, projection);
            if actual != *at {
                return Err(fenced(projection, *at, actual));
            }
        }
        // Removing a dead letter is how a retry claims it: only one may win.
        if let Some(gone) = tx
            .removed_dead_letters
            .iter()
            .find(|id| !state.dead_letters.contains_key(id))
        {
            return Err(Error::DeadLetterNotFound(*gone));
        }
        apply(&mut state, tx);
        Ok(())
    }

    async fn checkpoint(&self, projection: &str) -> Result<Option<CheckpointRecord>> {
        Ok(lock(&self.state).checkpoints.get(projection).cloned())
    }

    async fn checkpoints(&self) -> Result<Vec<CheckpointRecord>> {
        let mut all: Vec<_> = lock(&self.state).checkpoints.values().cloned().collect();
        all.sort_by(|a, b| a.projection.cmp(&b.projection));
        Ok(all)
    }

    async fn halt(&self, projection: &str, at: Position, error: &str, attempts: u32) -> Result<()> {
        let mut state = lock(&self.state);
        if Self::position_of(&state, projection) != at {
            // A stale worker: the checkpoint moved on without it.
            return Ok(());
        }
        let record = state
            .checkpoints
            .entry(projection.to_owned())
            .or_insert_with(|| CheckpointRecord {
                projection: projection.to_owned(),
                position: Position::START,
                halted: None,
                halted_attempts: 0,
                updated_at: Utc::now(),
            });
        record.halted = Some(error.to_owned());
        record.halted_attempts = attempts;
        record.updated_at = Utc::now();
        Ok(())
    }
}

impl DeadLetters for MemoryCheckpoints {
    async fn record_dead_letter(&self, tx: &mut MemoryTx, letter: &DeadLetter) -> Result<i64> {
        let mut letter = letter.clone();
        let mut state = lock(&self.state);
        // As a database would: the existing letter's id, or a fresh one (a rolled-back
        // transaction leaves a gap).
        letter.id = match state
            .dead_letters
            .values()
            .find(|d| d.projection == letter.projection && d.event_id == letter.event_id)
        {
            Some(existing) => existing.id,
            None => {
                state.next_dead_letter += 1;
                state.next_dead_letter
            }
        };
        let id = letter.id;
        tx.dead_letters.push(letter);
        Ok(id)
    }

    async fn dead_letters(&self, projection: Option<&str>) -> Result<Vec<DeadLetter>> {
        Ok(lock(&self.state)
            .dead_letters
            .values()
            .filter(|d| projection.is_none_or(|p| d.projection == p))
            .cloned()
            .collect())
    }

    async fn remove_dead_letter(&self, tx: &mut MemoryTx, id: i64) -> Result<bool> {
        let exists = lock(&self.state).dead_letters.contains_key(&id);
        if exists {
            tx.removed_dead_letters.push(id);
        }
        Ok(exists)
    }

    async fn streams_with_dead_letters(
        &self,
        tx: &mut MemoryTx,
        projection: &str,
        streams: &[String],
        every_letter: bool,
    ) -> Result<HashSet<String>> {
        let state = lock(&self.state);
        let committed = state
            .dead_letters
            .values()
            .filter(|d| !tx.removed_dead_letters.contains(&d.id));
        Ok(committed
            .chain(&tx.dead_letters)
            .filter(|d| d.projection == projection && streams.contains(&d.stream_id))
            .filter(|d| every_letter || d.parks_stream)
            .map(|d| d.stream_id.clone())
            .collect())
    }
}

impl Leases for MemoryCheckpoints {
    type Lease = MemoryLease;

    async fn try_lease(&self, projection: &str) -> Result<Option<MemoryLease>> {
        let mut state = lock(&self.state);
        if state.leases.contains_key(projection) {
            return Ok(None);
        }
        state.next_lease += 1;
        let token = state.next_lease;
        state.leases.insert(projection.to_owned(), token);
        Ok(Some(MemoryLease {
            state: Arc::clone(&self.state),
            projection: projection.to_owned(),
            token,
        }))
    }

    async fn lease_held(&self, projection: &str) -> Result<bool> {
        Ok(lock(&self.state).leases.contains_key(projection))
    }

    async fn lease_alive(&self, lease: &mut MemoryLease) -> bool {
        lock(&self.state).leases.get(&lease.projection) == Some(&lease.token)
    }
}

impl Rebuilds for MemoryCheckpoints {
    async fn reset(&self, projection: &str, tables: &[String]) -> Result<()> {
        let mut state = lock(&self.state);
        for table in tables {
            state.tables.remove(table);
        }
        state.checkpoints.remove(projection);
        state.dead_letters.retain(|_, d| d.projection != projection);
        Ok(())
    }
}

impl ProcessStore for MemoryCheckpoints {
    async fn put_timer(&self, timer: &Timer) -> Result<()> {
        let key = (
            timer.process.clone(),
            timer.instance.clone(),
            timer.name.clone(),
        );
        let mut state = lock(&self.state);
        match state.timers.get(&key) {
            Some(stored) if stored.version >= timer.version => {}
            _ => {
                state.timers.insert(key, timer.clone());
            }
        }
        Ok(())
    }

    async fn claim_due_timers(
        &self,
        process: &str,
        now: DateTime<Utc>,
        claim_for: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<Timer>> {
        let until = now + chrono::Duration::from_std(claim_for).unwrap_or(chrono::Duration::MAX);
        let mut state = lock(&self.state);
        let mut due: Vec<&mut Timer> = state
            .timers
            .values_mut()
            .filter(|t| t.process == process && t.due_at.is_some_and(|at| at <= now))
            .collect();
        due.sort_by_key(|t| t.due_at);
        Ok(due
            .into_iter()
            .take(limit)
            .map(|t| {
                let claimed = t.clone();
                t.due_at = Some(until);
                claimed
            })
            .collect())
    }

    async fn timer_fired(&self, timer: &Timer) -> Result<()> {
        let key = (
            timer.process.clone(),
            timer.instance.clone(),
            timer.name.clone(),
        );
        if let Some(stored) = lock(&self.state).timers.get_mut(&key) {
            if stored.version == timer.version {
                stored.due_at = None;
            }
        }
        Ok(())
    }

    async fn put_instance(&self, process: &str, instance: &str, open: bool) -> Result<()> {
        lock(&self.state)
            .instances
            .insert((process.to_owned(), instance.to_owned()), open);
        Ok(())
    }

    async fn process_counts(&self, process: &str) -> Result<(u64, u64)> {
        let state = lock(&self.state);
        let open = state
            .instances
            .iter()
            .filter(|((p, _), open)| p == process && **open)
            .count();
        let timers = state
            .timers
            .values()
            .filter(|t| t.process == process && t.due_at.is_some())
            .count();
        Ok((open as u64, timers as u64))
    }
}
