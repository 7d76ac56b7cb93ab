use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use annals_core::{decode_event, EventStore, Position, ReadStream, Upcasters};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{
    worker::{Shared, Worker},
    CheckpointStore, DeadLetter, Error, Projection, Result,
};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How often a waiter re-reads the stored checkpoint of a projection run elsewhere.
const STORED_POLL: Duration = Duration::from_millis(100);

/// How the engine batches, waits and leases.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineOptions {
    /// Events per batch (one transaction each). Default 500.
    pub batch_size: usize,
    /// Longest wait for new events before re-checking (live following). Default 1 s.
    pub idle_wait: Duration,
    /// Take a lease so only one worker per projection runs across processes. Default true.
    /// Without it, checkpoint fencing still prevents double application, but workers race.
    pub use_lease: bool,
    /// How often a standby worker tries to take the lease. Default 1 s.
    pub lease_retry: Duration,
    /// How often a running worker checks that its lease is still alive. Default 1 s.
    pub lease_check: Duration,
    /// Pause before a worker restarts after an infrastructure error. Default 1 s.
    pub restart_backoff: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            idle_wait: Duration::from_secs(1),
            use_lease: true,
            lease_retry: Duration::from_secs(1),
            lease_check: Duration::from_secs(1),
            restart_backoff: Duration::from_secs(1),
        }
    }
}

impl EngineOptions {
    /// Events per batch.
    #[must_use]
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Take (or not) a lease per projection.
    #[must_use]
    pub fn use_lease(mut self, on: bool) -> Self {
        self.use_lease = on;
        self
    }

    /// How often a standby worker tries for the lease.
    #[must_use]
    pub fn lease_retry(mut self, every: Duration) -> Self {
        self.lease_retry = every;
        self
    }

    /// Longest idle wait while following live.
    #[must_use]
    pub fn idle_wait(mut self, wait: Duration) -> Self {
        self.idle_wait = wait;
        self
    }

    /// Pause before restarting after an infrastructure error.
    #[must_use]
    pub fn restart_backoff(mut self, wait: Duration) -> Self {
        self.restart_backoff = wait;
        self
    }
}

/// What a projection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProjectionState {
    /// Applying events (catching up or following live).
    Running,
    /// A rebuild into shadow tables is under way or was interrupted (the live tables keep
    /// serving).
    Rebuilding,
    /// Waiting for another worker's lease.
    Standby,
    /// Stopped on an event that kept failing; see the error.
    Halted,
    /// Not running in this process.
    Stopped,
}

impl fmt::Display for ProjectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProjectionState::Running => "running",
            ProjectionState::Rebuilding => "rebuilding",
            ProjectionState::Standby => "standby",
            ProjectionState::Halted => "halted",
            ProjectionState::Stopped => "stopped",
        })
    }
}

/// One projection's progress.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectionStatus {
    /// Persisted name.
    pub name: String,
    /// What it is doing.
    pub state: ProjectionState,
    /// Everything up to here is applied.
    pub checkpoint: Position,
    /// The log's head.
    pub head: Position,
    /// Head minus checkpoint, in global sequence numbers (0 when caught up).
    pub lag: u64,
    /// Dead letters recorded for it.
    pub dead_letters: usize,
    /// Recent throughput (0 when not running here).
    pub events_per_second: f64,
    /// Why it halted.
    pub error: Option<String>,
}

/// Where a rebuild stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebuildProgress {
    /// The projection being rebuilt.
    pub projection: String,
    /// Global sequence number reached.
    pub done: u64,
    /// The log's head (moves while writers append).
    pub total: u64,
    /// Where an interrupted rebuild resumed from.
    pub resumed_from: Option<Position>,
    /// Set on the last report: the shadow tables were swapped in.
    pub swapped: bool,
}

/// A registered projection with its types erased, so one engine runs several.
trait Registered<S, C: CheckpointStore>: Send + Sync {
    fn name(&self) -> &str;
    fn tables(&self) -> Vec<String>;
    fn rebuild<'a>(
        &'a self,
        engine: &'a EngineInner<S, C>,
        progress: &'a mut (dyn FnMut(&RebuildProgress) + Send),
    ) -> BoxFuture<'a, Result<Position>>;
    fn spawn(
        &self,
        engine: &EngineInner<S, C>,
        shared: Arc<Shared>,
        token: CancellationToken,
    ) -> JoinHandle<()>;
    fn retry<'a>(
        &'a self,
        engine: &'a EngineInner<S, C>,
        letter: DeadLetter,
    ) -> BoxFuture<'a, Result<()>>;
}

struct Entry<P>(Arc<P>);

impl<P, S, C> Registered<S, C> for Entry<P>
where
    P: Projection<C>,
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
{
    fn name(&self) -> &str {
        self.0.name()
    }

    fn tables(&self) -> Vec<String> {
        self.0.tables()
    }

    fn rebuild<'a>(
        &'a self,
        engine: &'a EngineInner<S, C>,
        progress: &'a mut (dyn FnMut(&RebuildProgress) + Send),
    ) -> BoxFuture<'a, Result<Position>> {
        Box::pin(crate::rebuild::rebuild(
            &*self.0,
            &engine.store,
            &engine.checkpoints,
            &engine.upcasters,
            engine.options.batch_size,
            progress,
        ))
    }

    fn spawn(
        &self,
        engine: &EngineInner<S, C>,
        shared: Arc<Shared>,
        token: CancellationToken,
    ) -> JoinHandle<()> {
        let worker = Worker {
            projection: Arc::clone(&self.0),
            store: engine.store.clone(),
            checkpoints: engine.checkpoints.clone(),
            options: engine.options.clone(),
            upcasters: Arc::clone(&engine.upcasters),
            shared,
        };
        tokio::spawn(worker.run(token))
    }

    fn retry<'a>(
        &'a self,
        engine: &'a EngineInner<S, C>,
        letter: DeadLetter,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let raw = engine
                .store
                .read_stream(
                    &letter.stream_id,
                    ReadStream::forward_from(letter.stream_version).limit(1),
                )
                .await?
                .into_iter()
                .find(|e| e.event_id == letter.event_id)
                .ok_or(Error::DeadLetterNotFound(letter.id))?;
            let handler = |source| Error::Handler {
                projection: letter.projection.clone(),
                source,
            };
            let envelope =
                decode_event::<P::Event>(&raw, &engine.upcasters).map_err(|e| handler(e.into()))?;
            let mut tx = engine.checkpoints.begin_untracked().await?;
            if !engine
                .checkpoints
                .remove_dead_letter(&mut tx, letter.id)
                .await?
            {
                return Err(Error::DeadLetterNotFound(letter.id));
            }
            self.0.handle(&envelope, &mut tx).await.map_err(handler)?;
            engine.checkpoints.commit_untracked(tx).await
        })
    }
}

pub(crate) struct EngineInner<S, C> {
    store: S,
    checkpoints: C,
    options: EngineOptions,
    upcasters: Arc<Upcasters>,
    projections: Vec<Box<dyn Registered<S, C>>>,
}

/// Runs projections: each in its own worker, with its own checkpoint.
///
/// ```
/// # use annals_projections::{ProjectionEngine, MemoryCheckpoints};
/// # use annals_store_memory::MemoryEventStore;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> annals_projections::Result<()> {
/// let engine = ProjectionEngine::new(MemoryEventStore::new(), MemoryCheckpoints::new());
/// // .register(MyProjection) for each read model
/// let running = engine.start();
/// running.wait_until_caught_up(annals_core::Position::START, std::time::Duration::from_secs(1)).await?;
/// running.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct ProjectionEngine<S, C> {
    inner: Arc<EngineInner<S, C>>,
}

impl<S, C> Clone for ProjectionEngine<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S, C> fmt::Debug for ProjectionEngine<S, C>
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProjectionEngine")
            .field("projections", &self.names())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl<S, C> ProjectionEngine<S, C>
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
{
    /// An engine reading `store` and writing read models through `checkpoints`.
    pub fn new(store: S, checkpoints: C) -> Self {
        Self {
            inner: Arc::new(EngineInner {
                store,
                checkpoints,
                options: EngineOptions::default(),
                upcasters: Arc::new(Upcasters::new()),
                projections: Vec::new(),
            }),
        }
    }

    fn edit(self, f: impl FnOnce(&mut EngineInner<S, C>)) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                f(&mut inner);
                Self {
                    inner: Arc::new(inner),
                }
            }
            // Configuration happens before the engine is shared; a clone made earlier
            // keeps its own configuration.
            Err(shared) => Self { inner: shared },
        }
    }

    /// Replaces the options.
    #[must_use]
    pub fn with_options(self, options: EngineOptions) -> Self {
        self.edit(|inner| inner.options = options)
    }

    /// Decodes events through these upcasters.
    #[must_use]
    pub fn with_upcasters(self, upcasters: Upcasters) -> Self {
        self.edit(|inner| inner.upcasters = Arc::new(upcasters))
    }

    /// Adds a projection.
    #[must_use]
    pub fn register<P: Projection<C>>(self, projection: P) -> Self {
        self.edit(|inner| {
            inner
                .projections
                .push(Box::new(Entry(Arc::new(projection))))
        })
    }

    /// The registered projections' names.
    pub fn names(&self) -> Vec<String> {
        self.inner
            .projections
            .iter()
            .map(|p| p.name().to_owned())
            .collect()
    }

    /// The event store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Where read models and checkpoints live.
    pub fn checkpoints(&self) -> &C {
        &self.inner.checkpoints
    }

    fn find(&self, name: &str) -> Result<&dyn Registered<S, C>> {
        self.inner
            .projections
            .iter()
            .find(|p| p.name() == name)
            .map(|p| p.as_ref())
            .ok_or_else(|| Error::UnknownProjection {
                name: name.to_owned(),
                known: self.names(),
            })
    }

    /// Starts one worker per projection. Call inside a tokio runtime.
    pub fn start(&self) -> RunningProjections<S, C> {
        let token = CancellationToken::new();
        let workers = self
            .inner
            .projections
            .iter()
            .map(|p| {
                let shared = Arc::new(Shared::new(p.name()));
                let task = p.spawn(&self.inner, Arc::clone(&shared), token.child_token());
                (shared, task)
            })
            .collect();
        info!(projections = ?self.names(), "projection engine started");
        RunningProjections {
            engine: self.clone(),
            token,
            workers,
        }
    }

    /// Each registered projection's stored status (state `Stopped` or `Halted`, as seen
    /// from outside any worker).
    ///
    /// # Errors
    ///
    /// Store errors.
    pub async fn status(&self) -> Result<Vec<ProjectionStatus>> {
        let checkpoints = &self.inner.checkpoints;
        let head = self.inner.store.head().await?;
        let records = checkpoints.checkpoints().await?;
        let letters = checkpoints.dead_letters(None).await?;
        let mut statuses = Vec::new();
        for name in self.names() {
            let record = records.iter().find(|r| r.projection == name);
            let checkpoint = record.map_or(Position::START, |r| r.position);
            let error = record.and_then(|r| r.halted.clone());
            let state = if error.is_some() {
                ProjectionState::Halted
            } else if checkpoints.rebuild_checkpoint(&name).await?.is_some() {
                ProjectionState::Rebuilding
            } else if checkpoints.lease_held(&name).await? {
                ProjectionState::Running
            } else {
                ProjectionState::Stopped
            };
            statuses.push(ProjectionStatus {
                state,
                checkpoint,
                head,
                lag: head.sequence().saturating_sub(checkpoint.sequence()),
                dead_letters: letters.iter().filter(|d| d.projection == name).count(),
                events_per_second: 0.0,
                error,
                name,
            });
        }
        Ok(statuses)
    }

    /// Dead letters of one projection or all.
    ///
    /// # Errors
    ///
    /// Store errors; [`Error::UnknownProjection`] for an unknown name.
    pub async fn dead_letters(&self, projection: Option<&str>) -> Result<Vec<DeadLetter>> {
        if let Some(name) = projection {
            self.find(name)?;
        }
        self.inner.checkpoints.dead_letters(projection).await
    }

    async fn letter(&self, id: i64) -> Result<DeadLetter> {
        self.inner
            .checkpoints
            .dead_letters(None)
            .await?
            .into_iter()
            .find(|d| d.id == id)
            .ok_or(Error::DeadLetterNotFound(id))
    }

    /// Runs the projection's handler on a dead-lettered event again (now, out of order) and
    /// removes the dead letter in the same transaction.
    ///
    /// # Errors
    ///
    /// [`Error::DeadLetterNotFound`], [`Error::UnknownProjection`], or
    /// [`Error::Handler`] when it fails again (the dead letter stays).
    pub async fn retry_dead_letter(&self, id: i64) -> Result<()> {
        let letter = self.letter(id).await?;
        self.find(&letter.projection)?
            .retry(&self.inner, letter)
            .await
    }

    /// Rebuilds `name` into shadow tables from the start of the log while the live tables
    /// keep serving (and live workers keep running), then swaps them in atomically; an
    /// interrupted rebuild resumes where it stopped. Returns the position the projection
    /// continues live from.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownProjection`]; [`Error::Unsupported`] when the projection declares
    /// no tables or the backend has no shadows; [`Error::RebuildFailed`] when a handler
    /// refuses an event (the shadow is kept: fix and rerun).
    pub async fn rebuild(
        &self,
        name: &str,
        mut progress: impl FnMut(&RebuildProgress) + Send,
    ) -> Result<Position> {
        self.find(name)?.rebuild(&self.inner, &mut progress).await
    }

    /// Drops an unfinished rebuild of `name`; returns whether there was one.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownProjection`] or store errors.
    pub async fn discard_rebuild(&self, name: &str) -> Result<bool> {
        self.find(name)?;
        self.inner.checkpoints.discard_shadow(name).await
    }

    /// Where an unfinished rebuild of `name` stands, if there is one.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownProjection`] or store errors.
    pub async fn rebuild_checkpoint(&self, name: &str) -> Result<Option<Position>> {
        self.find(name)?;
        self.inner.checkpoints.rebuild_checkpoint(name).await
    }

    /// Empties `name`'s tables and moves its checkpoint to the start, so its workers replay
    /// the whole log (the plain alternative to [`rebuild`](ProjectionEngine::rebuild) for
    /// small read models: readers see an empty table meanwhile).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownProjection`]; [`Error::Unsupported`] when it declares no tables.
    pub async fn reset(&self, name: &str) -> Result<()> {
        let tables = self.find(name)?.tables();
        if tables.is_empty() {
            return Err(Error::Unsupported(
                "the projection declares no tables (Projection::tables)",
            ));
        }
        self.inner.checkpoints.reset(name, &tables).await
    }

    /// Deletes a dead letter without applying it.
    ///
    /// # Errors
    ///
    /// [`Error::DeadLetterNotFound`] or store errors.
    pub async fn discard_dead_letter(&self, id: i64) -> Result<()> {
        let mut tx = self.inner.checkpoints.begin_untracked().await?;
        if !self
            .inner
            .checkpoints
            .remove_dead_letter(&mut tx, id)
            .await?
        {
            return Err(Error::DeadLetterNotFound(id));
        }
        self.inner.checkpoints.commit_untracked(tx).await
    }
}

/// The workers of a started [`ProjectionEngine`].
pub struct RunningProjections<S, C> {
    engine: ProjectionEngine<S, C>,
    token: CancellationToken,
    workers: Vec<(Arc<Shared>, JoinHandle<()>)>,
}

impl<S, C> fmt::Debug for RunningProjections<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningProjections")
            .field(
                "projections",
                &self
                    .workers
                    .iter()
                    .map(|(s, _)| &s.name)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<S, C> RunningProjections<S, C>
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
{
    /// The engine these workers belong to.
    pub fn engine(&self) -> &ProjectionEngine<S, C> {
        &self.engine
    }

    /// A token that stops every worker when cancelled (for example on Ctrl-C).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Waits until every projection's checkpoint reaches `position` (for example the
    /// position a command returned, to read your own writes).
    ///
    /// # Errors
    ///
    /// [`Error::Halted`] when a projection halts, [`Error::Timeout`] after `timeout`,
    /// [`Error::ShutDown`] when the workers stop first.
    pub async fn wait_until_caught_up(&self, position: Position, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        for (shared, _) in &self.workers {
            let mut checkpoint = shared.checkpoint.subscribe();
            let mut state = shared.state.subscribe();
            loop {
                if *checkpoint.borrow_and_update() >= position {
                    break;
                }
                let (current, error) = state.borrow_and_update().clone();
                if current == ProjectionState::Halted {
                    return Err(Error::Halted {
                        projection: shared.name.clone(),
                        error: error.unwrap_or_default(),
                    });
                }
                if current == ProjectionState::Stopped && self.token.is_cancelled() {
                    return Err(Error::ShutDown);
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(Error::Timeout {
                        projection: shared.name.clone(),
                        target: position,
                        checkpoint: *checkpoint.borrow(),
                    });
                }
                // A standby worker learns of the active one's progress from the stored
                // checkpoint, so poll it as well as listening.
                let nap = (deadline - tokio::time::Instant::now()).min(STORED_POLL);
                let woke = tokio::time::timeout(nap, async {
                    tokio::select! {
                        r = checkpoint.changed() => r.is_ok(),
                        r = state.changed() => r.is_ok(),
                    }
                })
                .await;
                if woke == Ok(false) {
                    return Err(Error::ShutDown);
                }
                if current == ProjectionState::Standby {
                    let stored = self
                        .engine
                        .inner
                        .checkpoints
                        .checkpoint(&shared.name)
                        .await?;
                    if stored.is_some_and(|c| c.position >= position) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Live status of every projection.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub async fn status(&self) -> Result<Vec<ProjectionStatus>> {
        let mut statuses = self.engine.status().await?;
        for status in &mut statuses {
            if let Some((shared, _)) = self.workers.iter().find(|(s, _)| s.name == status.name) {
                let (state, error) = shared.state.borrow().clone();
                status.state = state;
                if error.is_some() {
                    status.error = error;
                }
                status.events_per_second = shared.events_per_second();
            }
        }
        Ok(statuses)
    }

    /// Kills every worker at once, wherever it is (mid-batch included), as a crash would.
    /// The open batch rolls back; a later start resumes from the last checkpoint. For
    /// tests and emergencies; prefer [`shutdown`](RunningProjections::shutdown).
    pub async fn abort(self) {
        for (_, task) in &self.workers {
            task.abort();
        }
        for (_, task) in self.workers {
            let _ = task.await;
        }
    }

    /// Stops every worker after its current batch and waits for them.
    pub async fn shutdown(self) {
        self.token.cancel();
        for (_, task) in self.workers {
            let _ = task.await;
        }
    }
}
