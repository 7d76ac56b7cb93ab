//! The engine: a registry of subscriptions (projections, and any other [`Subscriber`]:
//! relays, process managers), each run by its own worker, with status, dead-letter
//! operations, rebuilds and resets.

mod dead_letters;
mod options;
mod registry;
mod running;
mod skip;
mod start_from;

use std::{fmt, sync::Arc};

use annals_core::{EventStore, Position, Upcasters};
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use options::EngineOptions;
pub use running::RunningProjections;

use self::registry::{Bus, Log, Rebuildable, Registered};
use crate::{
    projection::ProjectionKind,
    subscription::{BusSubscription, Shared, Subscriber, SubscriptionState, SubscriptionStatus},
    CheckpointStore, DeadLetter, Error, Projection, RebuildOptions, RebuildProgress, Result,
};

pub(crate) struct EngineInner<S, C> {
    pub(crate) store: S,
    pub(crate) checkpoints: C,
    pub(crate) options: EngineOptions,
    pub(crate) upcasters: Arc<Upcasters>,
    pub(crate) entries: Vec<Box<dyn Registered<S, C>>>,
    pub(crate) catalog: Option<annals_core::EventCatalog>,
}

/// Runs subscriptions: each in its own worker, with its own checkpoint.
///
/// Register read models with [`register`](ProjectionEngine::register) and other kinds of
/// subscription (a relay, a process manager) with
/// [`subscribe`](ProjectionEngine::subscribe).
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
    pub(crate) inner: Arc<EngineInner<S, C>>,
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
            .field("subscriptions", &self.names())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl<S, C> ProjectionEngine<S, C>
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
{
    /// An engine reading `store` and keeping checkpoints (and read models) in `checkpoints`.
    pub fn new(store: S, checkpoints: C) -> Self {
        Self {
            inner: Arc::new(EngineInner {
                store,
                checkpoints,
                options: EngineOptions::default(),
                upcasters: Arc::new(Upcasters::new()),
                entries: Vec::new(),
                catalog: None,
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

    /// Decodes events through these upcasters (for projections registered after this).
    #[must_use]
    pub fn with_upcasters(self, upcasters: Upcasters) -> Self {
        self.edit(|inner| inner.upcasters = Arc::new(upcasters))
    }

    /// The application's event types, for `verify` (decoding stored history with the
    /// current code) and schema checks.
    #[must_use]
    pub fn with_catalog(self, catalog: annals_core::EventCatalog) -> Self {
        self.edit(|inner| inner.catalog = Some(catalog))
    }

    /// The catalog given to [`with_catalog`](ProjectionEngine::with_catalog).
    pub fn catalog(&self) -> Option<&annals_core::EventCatalog> {
        self.inner.catalog.as_ref()
    }

    /// Adds a projection (a read model, rebuildable from the log).
    #[must_use]
    pub fn register<P: Projection<C>>(self, projection: P) -> Self {
        self.edit(|inner| {
            let kind = ProjectionKind {
                projection: Arc::new(projection),
                upcasters: Arc::clone(&inner.upcasters),
            };
            inner
                .entries
                .push(Box::new(Rebuildable(Log(Arc::new(kind)))));
        })
    }

    /// Adds another kind of subscription: anything implementing [`Subscriber`] (the NATS
    /// relay, a process manager).
    #[must_use]
    pub fn subscribe<K: Subscriber<C>>(self, subscriber: K) -> Self {
        self.edit(|inner| inner.entries.push(Box::new(Log(Arc::new(subscriber)))))
    }

    /// Adds a subscription that reads a message bus instead of the log (an inbox consumer
    /// from annals-nats): it runs its own loop, and shares status, dead letters and the CLI.
    #[must_use]
    pub fn consume<K: BusSubscription<C>>(self, consumer: K) -> Self {
        self.edit(|inner| inner.entries.push(Box::new(Bus(Arc::new(consumer)))))
    }

    /// The registered subscriptions' names.
    pub fn names(&self) -> Vec<String> {
        self.inner
            .entries
            .iter()
            .map(|p| p.name().to_owned())
            .collect()
    }

    /// The event store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Where checkpoints and read models live.
    pub fn checkpoints(&self) -> &C {
        &self.inner.checkpoints
    }

    pub(crate) fn find(&self, name: &str) -> Result<&dyn Registered<S, C>> {
        self.inner
            .entries
            .iter()
            .find(|p| p.name() == name)
            .map(|p| p.as_ref())
            .ok_or_else(|| Error::UnknownProjection {
                name: name.to_owned(),
                known: self.names(),
            })
    }

    /// Starts one worker per subscription. Call inside a tokio runtime.
    pub fn start(&self) -> RunningProjections<S, C> {
        self.start_where(|_, _| true)
    }

    /// Starts workers for the subscriptions `filter(name, kind)` selects (for example only
    /// the relays, to scale them apart from the projections).
    pub fn start_where(&self, filter: impl Fn(&str, &str) -> bool) -> RunningProjections<S, C> {
        let token = CancellationToken::new();
        let workers = self
            .inner
            .entries
            .iter()
            .filter(|p| filter(p.name(), p.kind()))
            .map(|p| {
                let shared = Arc::new(Shared::new(p.name()));
                let task = p.spawn(&self.inner, Arc::clone(&shared), token.child_token());
                (shared, task)
            })
            .collect::<Vec<(Arc<Shared>, _)>>();
        let names: Vec<&str> = workers.iter().map(|(s, _)| s.name.as_str()).collect();
        info!(subscriptions = ?names, "engine started");
        RunningProjections {
            engine: self.clone(),
            token,
            workers,
        }
    }

    /// Each registered subscription's stored status (state `Stopped`, `Running` when some
    /// process holds its lease, `Halted` or `Rebuilding`, as seen from outside any worker).
    ///
    /// # Errors
    ///
    /// Store errors.
    pub async fn status(&self) -> Result<Vec<SubscriptionStatus>> {
        let checkpoints = &self.inner.checkpoints;
        // Checkpoints first, then the head: a checkpoint is never ahead of a head read
        // after it.
        let records = checkpoints.checkpoints().await?;
        let letters = checkpoints.dead_letters(None).await?;
        let head = self.inner.store.head().await?;
        let store = &self.inner.store;
        let last_event_at = store.recorded_at(head).await?;
        let horizon_lag = store.held_back().await?;
        let now = chrono::Utc::now();
        let mut statuses = Vec::new();
        for entry in &self.inner.entries {
            let name = entry.name().to_owned();
            let record = records.iter().find(|r| r.projection == name);
            let checkpoint = record.map_or(Position::START, |r| r.position);
            let error = record.and_then(|r| r.halted.clone());
            let shadow = checkpoints.rebuild_checkpoint(&name).await?;
            let rebuilding = shadow.is_some()
                && checkpoints
                    .lease_held(&crate::rebuild::shadow_name(&name))
                    .await?;
            let unfinished_rebuild = shadow.filter(|_| !rebuilding);
            let state = if error.is_some() {
                SubscriptionState::Halted
            } else if rebuilding {
                SubscriptionState::Rebuilding
            } else if checkpoints.lease_held(&name).await? {
                SubscriptionState::Running
            } else {
                SubscriptionState::Stopped
            };
            // A bus subscription's progress is on the bus, not in a checkpoint.
            let (state, checkpoint, head, lag) = match entry.progress().await {
                Some(bus) => {
                    let state = match state {
                        SubscriptionState::Stopped if bus.active => SubscriptionState::Running,
                        other => other,
                    };
                    (state, bus.acknowledged, bus.head, bus.pending)
                }
                None => {
                    let head = head.max(checkpoint);
                    let lag = head.sequence().saturating_sub(checkpoint.sequence());
                    (state, checkpoint, head, lag)
                }
            };
            // A bus subscription's positions are the bus's: no log times for them.
            let (checkpoint_event_at, oldest_pending_at) = match entry.reads() {
                None => (None, None),
                Some(_) if lag == 0 => (last_event_at, None),
                Some(types) => (
                    store.recorded_at(checkpoint).await?,
                    self.oldest_pending(checkpoint, types).await?,
                ),
            };
            let lag_seconds = oldest_pending_at.map_or(0.0, |at| {
                (now - at).num_milliseconds().max(0) as f64 / 1000.0
            });
            statuses.push(SubscriptionStatus {
                kind: entry.kind(),
                state,
                checkpoint,
                head,
                lag,
                horizon_lag,
                last_event_at,
                checkpoint_event_at,
                checkpoint_at: record.map(|r| r.updated_at),
                oldest_pending_at,
                lag_seconds,
                unfinished_rebuild,
                details: entry
                    .details()
                    .await
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                dead_letters: letters.iter().filter(|d| d.projection == name).count(),
                events_per_second: 0.0,
                error,
                name,
            });
        }
        Ok(statuses)
    }

    /// When the first event of `types` after `after` was recorded.
    async fn oldest_pending(
        &self,
        after: Position,
        types: Option<Vec<String>>,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let read = annals_core::ReadAll::after(after).limit(1);
        let read = match types {
            Some(types) => read.event_types(types),
            None => read,
        };
        let first = self.inner.store.read_all(read).await?;
        Ok(first.first().map(|e| e.recorded_at))
    }

    /// Dead letters of one subscription or all, oldest first.
    ///
    /// # Errors
    ///
    /// Store errors; [`Error::UnknownProjection`] for an unknown name.
    pub async fn dead_letters(&self, name: Option<&str>) -> Result<Vec<DeadLetter>> {
        if let Some(name) = name {
            self.find(name)?;
        }
        self.inner.checkpoints.dead_letters(name).await
    }

    /// Rebuilds `name` into shadow tables from the start of the log while the live tables
    /// keep serving (and live workers keep running), then swaps them in atomically; an
    /// interrupted rebuild resumes where it stopped. Returns the position the projection
    /// continues live from.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownProjection`]; [`Error::Unsupported`] when it is not a projection,
    /// declares no tables or the backend has no shadows; [`Error::RebuildFailed`] when a
    /// handler refuses an event (the shadow is kept: fix and rerun).
    pub async fn rebuild(
        &self,
        name: &str,
        progress: impl FnMut(&RebuildProgress) + Send,
    ) -> Result<Position> {
        self.rebuild_with(name, &RebuildOptions::default(), progress)
            .await
    }

    /// [`rebuild`](ProjectionEngine::rebuild), with `options` for the events the handler
    /// refuses: per the projection's failure policy by default (`Halt` stops the rebuild;
    /// `DeadLetter` and `Park` dead-letter them, and the rebuild's letters replace the
    /// projection's at the swap), or dead-lettered whatever the policy with
    /// [`RebuildOptions::skip_failures`].
    ///
    /// # Errors
    ///
    /// As [`rebuild`](ProjectionEngine::rebuild).
    pub async fn rebuild_with(
        &self,
        name: &str,
        options: &RebuildOptions,
        mut progress: impl FnMut(&RebuildProgress) + Send,
    ) -> Result<Position> {
        self.find(name)?
            .rebuild(&self.inner, options, &mut progress)
            .await
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
}
