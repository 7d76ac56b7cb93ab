//! The workers of a started engine: waiting for them to catch up, their live status,
//! stopping them.

use std::{fmt, sync::Arc, time::Duration};

use annals_core::{EventStore, Position};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ProjectionEngine;
use crate::{
    subscription::{Shared, SubscriptionState, SubscriptionStatus},
    CheckpointStore, Error, Result,
};

/// How often a waiter re-reads the stored checkpoint of a subscription run elsewhere.
const STORED_POLL: Duration = Duration::from_millis(100);

/// The workers of a started [`ProjectionEngine`].
pub struct RunningProjections<S, C> {
    pub(super) engine: ProjectionEngine<S, C>,
    pub(super) token: CancellationToken,
    pub(super) workers: Vec<(Arc<Shared>, JoinHandle<()>)>,
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
    /// The names of the subscriptions these workers run.
    pub fn names(&self) -> Vec<String> {
        self.workers.iter().map(|(s, _)| s.name.clone()).collect()
    }

    /// The engine these workers belong to.
    pub fn engine(&self) -> &ProjectionEngine<S, C> {
        &self.engine
    }

    /// A token that stops every worker when cancelled (for example on Ctrl-C).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// `name`'s stored checkpoint (what other processes, and the operator, did to it).
    async fn stored(&self, name: &str) -> Result<Option<crate::CheckpointRecord>> {
        self.engine.inner.checkpoints.checkpoint(name).await
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
                if current == SubscriptionState::Halted {
                    // Unless an operator has just cleared the halt (`skip`): the worker
                    // notices within a lease-retry interval and goes on.
                    let stored = self.stored(&shared.name).await?;
                    if stored.is_none_or(|c| c.halted.is_some()) {
                        return Err(Error::Halted {
                            projection: shared.name.clone(),
                            error: error.unwrap_or_default(),
                        });
                    }
                }
                if current == SubscriptionState::Failed {
                    return Err(Error::Failed {
                        subscription: shared.name.clone(),
                        error: error.unwrap_or_default(),
                    });
                }
                if current == SubscriptionState::Stopped && self.token.is_cancelled() {
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
                if current == SubscriptionState::Standby {
                    let stored = self.stored(&shared.name).await?;
                    if stored.is_some_and(|c| c.position >= position) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Resolves when a subscription fails for good ([`SubscriptionState::Failed`]: its
    /// setup hit something retrying cannot fix), with [`Error::Failed`]; never while every
    /// worker runs, retries or halts. A service's main loop selects on it next to its
    /// shutdown signal, to exit instead of running without a subscription it needs.
    pub async fn failure(&self) -> Error {
        let mut waits = tokio::task::JoinSet::new();
        for (shared, _) in &self.workers {
            let mut state = shared.state.subscribe();
            let name = shared.name.clone();
            waits.spawn(async move {
                let error = state
                    .wait_for(|(s, _)| *s == SubscriptionState::Failed)
                    .await
                    .map(|failed| failed.1.clone().unwrap_or_default());
                match error {
                    Ok(error) => Error::Failed {
                        subscription: name,
                        error,
                    },
                    // The worker is gone without failing: never resolve for it.
                    Err(_) => std::future::pending().await,
                }
            });
        }
        match waits.join_next().await {
            Some(Ok(failed)) => failed,
            // No worker, or a waiter that panicked: nothing has failed.
            _ => std::future::pending().await,
        }
    }

    /// Live status of every projection.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub async fn status(&self) -> Result<Vec<SubscriptionStatus>> {
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
