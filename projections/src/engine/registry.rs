//! The engine's registry: subscriptions with their types erased, so one engine runs
//! several kinds.

use std::{future::Future, pin::Pin, sync::Arc};

use annals_core::{EventStore, Position};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{dead_letters, EngineInner};
use crate::{
    projection::ProjectionKind,
    subscription::{BusProgress, BusSubscription, Shared, Subscriber, Worker, WorkerStatus},
    CheckpointStore, DeadLetter, Error, FailurePolicy, Projection, RebuildOptions, RebuildProgress,
    Result,
};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A registered subscription, whatever its kind.
pub(crate) trait Registered<S, C: CheckpointStore>: Send + Sync {
    fn name(&self) -> &str;
    fn kind(&self) -> &'static str;
    fn policy(&self) -> FailurePolicy;
    /// What it reads from the log: `Some(None)` every event, `Some(Some(types))` those
    /// types; `None` for a subscription that reads a bus instead.
    fn reads(&self) -> Option<Option<Vec<String>>>;
    /// The read-model tables (projections only).
    fn tables(&self) -> Vec<String> {
        Vec::new()
    }
    fn spawn(
        &self,
        engine: &EngineInner<S, C>,
        shared: Arc<Shared>,
        token: CancellationToken,
    ) -> JoinHandle<()>;
    /// Handles a dead-lettered event again (and, when parking, the events parked behind it).
    fn retry<'a>(
        &'a self,
        engine: &'a EngineInner<S, C>,
        letter: DeadLetter,
    ) -> BoxFuture<'a, Result<()>>;
    /// Applies the events parked behind a discarded letter.
    fn release<'a>(
        &'a self,
        engine: &'a EngineInner<S, C>,
        stream_id: String,
    ) -> BoxFuture<'a, Result<()>>;
    fn rebuild<'a>(
        &'a self,
        engine: &'a EngineInner<S, C>,
        options: &'a RebuildOptions,
        progress: &'a mut (dyn FnMut(&RebuildProgress) + Send),
    ) -> BoxFuture<'a, Result<Position>> {
        let _ = (engine, options, progress);
        Box::pin(async { Err(Error::Unsupported("only projections can be rebuilt")) })
    }
    /// Figures of its kind for status.
    fn details(&self) -> BoxFuture<'_, Vec<(&'static str, u64)>> {
        Box::pin(async { Vec::new() })
    }
    /// Where a bus subscription stands (`None` for the log's subscriptions, whose
    /// checkpoints say it).
    fn progress(&self) -> BoxFuture<'_, Option<BusProgress>> {
        Box::pin(async { None })
    }
}

/// Any subscriber reading the log.
pub(crate) struct Log<K>(pub(crate) Arc<K>);

impl<K, S, C> Registered<S, C> for Log<K>
where
    K: Subscriber<C>,
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
{
    fn name(&self) -> &str {
        self.0.name()
    }

    fn kind(&self) -> &'static str {
        self.0.kind()
    }

    fn policy(&self) -> FailurePolicy {
        self.0.on_failure()
    }

    fn reads(&self) -> Option<Option<Vec<String>>> {
        Some(self.0.event_types())
    }

    fn details(&self) -> BoxFuture<'_, Vec<(&'static str, u64)>> {
        Box::pin(self.0.details())
    }

    fn spawn(
        &self,
        engine: &EngineInner<S, C>,
        shared: Arc<Shared>,
        token: CancellationToken,
    ) -> JoinHandle<()> {
        let worker = Worker {
            kind: Arc::clone(&self.0),
            store: engine.store.clone(),
            checkpoints: engine.checkpoints.clone(),
            options: engine.options.clone(),
            shared,
            parking_letters: std::sync::atomic::AtomicBool::new(false),
        };
        tokio::spawn(worker.run(token))
    }

    fn retry<'a>(
        &'a self,
        engine: &'a EngineInner<S, C>,
        letter: DeadLetter,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(dead_letters::retry(&*self.0, engine, letter))
    }

    fn release<'a>(
        &'a self,
        engine: &'a EngineInner<S, C>,
        stream_id: String,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(dead_letters::release(&*self.0, engine, stream_id))
    }
}

/// A projection: a subscriber whose tables can be rebuilt and reset.
pub(crate) struct Rebuildable<P>(pub(crate) Log<ProjectionKind<P>>);

impl<P, S, C> Registered<S, C> for Rebuildable<P>
where
    P: Projection<C>,
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
{
    fn name(&self) -> &str {
        Registered::<S, C>::name(&self.0)
    }

    fn kind(&self) -> &'static str {
        Registered::<S, C>::kind(&self.0)
    }

    fn policy(&self) -> FailurePolicy {
        Registered::<S, C>::policy(&self.0)
    }

    fn reads(&self) -> Option<Option<Vec<String>>> {
        Registered::<S, C>::reads(&self.0)
    }

    fn details(&self) -> BoxFuture<'_, Vec<(&'static str, u64)>> {
        Registered::<S, C>::details(&self.0)
    }

    fn tables(&self) -> Vec<String> {
        self.0 .0.projection.tables()
    }

    fn spawn(
        &self,
        engine: &EngineInner<S, C>,
        shared: Arc<Shared>,
        token: CancellationToken,
    ) -> JoinHandle<()> {
        self.0.spawn(engine, shared, token)
    }

    fn retry<'a>(
        &'a self,
        engine: &'a EngineInner<S, C>,
        letter: DeadLetter,
    ) -> BoxFuture<'a, Result<()>> {
        self.0.retry(engine, letter)
    }

    fn release<'a>(
        &'a self,
        engine: &'a EngineInner<S, C>,
        stream_id: String,
    ) -> BoxFuture<'a, Result<()>> {
        self.0.release(engine, stream_id)
    }

    fn rebuild<'a>(
        &'a self,
        engine: &'a EngineInner<S, C>,
        options: &'a RebuildOptions,
        progress: &'a mut (dyn FnMut(&RebuildProgress) + Send),
    ) -> BoxFuture<'a, Result<Position>> {
        Box::pin(crate::rebuild::rebuild(
            &self.0 .0,
            &engine.store,
            &engine.checkpoints,
            engine.options.batch_size,
            options,
            progress,
        ))
    }
}

/// A subscription that reads a bus and runs its own loop.
pub(crate) struct Bus<K>(pub(crate) Arc<K>);

impl<K, S, C> Registered<S, C> for Bus<K>
where
    K: BusSubscription<C>,
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
{
    fn name(&self) -> &str {
        self.0.name()
    }

    fn kind(&self) -> &'static str {
        self.0.kind()
    }

    fn policy(&self) -> FailurePolicy {
        self.0.on_failure()
    }

    fn reads(&self) -> Option<Option<Vec<String>>> {
        None
    }

    fn spawn(
        &self,
        engine: &EngineInner<S, C>,
        shared: Arc<Shared>,
        token: CancellationToken,
    ) -> JoinHandle<()> {
        let kind = Arc::clone(&self.0);
        let (checkpoints, options) = (engine.checkpoints.clone(), engine.options.clone());
        tokio::spawn(async move {
            kind.run(checkpoints, options, WorkerStatus(shared), token)
                .await;
        })
    }

    fn retry<'a>(
        &'a self,
        engine: &'a EngineInner<S, C>,
        letter: DeadLetter,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.0.retry(&engine.checkpoints, letter))
    }

    fn release<'a>(
        &'a self,
        engine: &'a EngineInner<S, C>,
        stream_id: String,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.0.release(&engine.checkpoints, stream_id))
    }

    fn progress(&self) -> BoxFuture<'_, Option<BusProgress>> {
        Box::pin(self.0.progress())
    }
}
