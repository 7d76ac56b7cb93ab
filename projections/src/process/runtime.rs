//! The process-manager runtime: a subscription that records decisions once and dispatches
//! their commands idempotently.

use std::{collections::VecDeque, future::Future, sync::Arc, time::Duration};

use annals_core::{
    command_event_id, decode_event, event_types_of, Aggregate, EventStore, ExecuteError, Metadata,
    RecordedEvent, Repository, SnapshotStore, Upcasters,
};
use serde::{Deserialize, Serialize};
use tracing::{debug, Instrument};
use uuid::Uuid;

use super::{Input, ProcessManager, TimerChange};
use crate::{
    subscription::{Failure, Subscriber},
    Checkpoints, FailurePolicy, HandlerError, ProcessStore, RetryPolicy, Timer,
};

/// How long a claimed timer stays hidden from other workers, by default.
const TIMER_CLAIM: Duration = Duration::from_secs(30);

/// How many due timers a tick claims at once.
const TIMERS_PER_TICK: usize = 100;

/// A command on its way to its aggregate.
#[derive(Clone, Debug, PartialEq)]
pub struct Dispatched<C> {
    /// Its id, derived from the decision that sends it: pass it to
    /// [`Repository::execute_once`](annals_core::Repository::execute_once), so a repeated
    /// dispatch (after a crash) is recognised.
    pub command_id: Uuid,
    /// The correlation id of the process (the triggering event's).
    pub correlation_id: Option<Uuid>,
    /// The command.
    pub command: C,
}

/// Why a dispatch did not apply.
#[derive(Debug)]
pub enum DispatchError {
    /// The target refused the command (its domain error): the process manager decides
    /// what that means ([`Input::Rejected`]).
    Rejected(String),
    /// The target could not be reached or failed: the batch is retried (every step is
    /// idempotent), then the subscription's failure policy applies.
    Failed(HandlerError),
}

/// Sends a process manager's commands to the application's aggregates, usually by matching
/// on the command and calling a [`Repository`]'s `execute_once` with
/// [`Dispatched::command_id`].
pub trait Dispatcher<C>: Send + Sync + 'static {
    /// Applies `command` (at most once per command id).
    fn dispatch(
        &self,
        command: Dispatched<C>,
    ) -> impl Future<Output = Result<(), DispatchError>> + Send;
}

/// A process manager's instance as an aggregate: inputs in, decisions recorded.
#[derive(Default, Serialize, Deserialize)]
#[serde(transparent)]
struct Instance<P>(P);

impl<P: ProcessManager> Aggregate for Instance<P> {
    const TYPE: &'static str = P::TYPE;
    type Command = Input<P::Observed, P::Command>;
    type Event = P::Event;
    type Error = std::convert::Infallible;

    fn handle(&self, input: Self::Command) -> Result<Vec<P::Event>, Self::Error> {
        Ok(self.0.decide(&input))
    }

    fn apply(&mut self, decision: &P::Event) {
        self.0.apply(decision);
    }
}

/// Runs a [`ProcessManager`] as a subscription (register it with
/// [`ProjectionEngine::subscribe`](crate::ProjectionEngine::subscribe)): its instances live
/// in `store`, its timers and open instances in `processes` (the engine's checkpoint
/// backend), its commands go through `dispatcher`.
pub struct ProcessRuntime<P, S, T, D> {
    instances: Repository<Instance<P>, S>,
    processes: T,
    dispatcher: Arc<D>,
    upcasters: Arc<Upcasters>,
    retry: RetryPolicy,
    on_failure: FailurePolicy,
    timer_claim: Duration,
}

impl<P: ProcessManager, S, T, D> std::fmt::Debug for ProcessRuntime<P, S, T, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessRuntime")
            .field("process", &P::TYPE)
            .field("retry", &self.retry)
            .field("on_failure", &self.on_failure)
            .finish_non_exhaustive()
    }
}

impl<P, S, T, D> ProcessRuntime<P, S, T, D>
where
    P: ProcessManager,
    S: EventStore + SnapshotStore,
    T: ProcessStore,
    D: Dispatcher<P::Command>,
{
    /// The runtime of `P` over `store` and `processes`, dispatching through `dispatcher`.
    /// Events that do not decode, and commands that keep failing, halt it (the default
    /// failure policy).
    pub fn new(store: S, processes: T, dispatcher: D) -> Self {
        Self {
            instances: Repository::new(store),
            processes,
            dispatcher: Arc::new(dispatcher),
            upcasters: Arc::new(Upcasters::new()),
            retry: RetryPolicy::default(),
            on_failure: FailurePolicy::Halt,
            timer_claim: TIMER_CLAIM,
        }
    }

    /// How long a claimed timer stays hidden from other workers while its input is
    /// decided (default 30 s): a worker that dies holding it lets it fire again after
    /// that. Longer than deciding on a timer and dispatching its commands takes.
    #[must_use]
    pub fn timer_claim(mut self, claim: Duration) -> Self {
        self.timer_claim = claim;
        self
    }

    /// Uses these upcasters when decoding the events it reacts to.
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = Arc::new(upcasters);
        self
    }

    /// Retries and the policy for an input that keeps failing.
    #[must_use]
    pub fn on_failure(mut self, retry: RetryPolicy, policy: FailurePolicy) -> Self {
        self.retry = retry;
        self.on_failure = policy;
        self
    }

    /// Records the decision on `input` (once: `input_id` keys it) and dispatches its
    /// commands; refusals are decided on in turn.
    async fn decide(
        &self,
        instance: &str,
        input_id: Uuid,
        input: Input<P::Observed, P::Command>,
        metadata: Metadata,
    ) -> Result<(), Failure> {
        let mut inputs = VecDeque::from([(input_id, input)]);
        while let Some((input_id, input)) = inputs.pop_front() {
            let decided = self
                .instances
                .execute_once_with_metadata(instance, input_id, input, metadata.clone())
                .await
                .map_err(|e| match e {
                    ExecuteError::Store(e) => Failure::Retry(e.into()),
                    ExecuteError::Rejected(never) => match never {},
                    other => Failure::Retry(other.to_string().into()),
                })?;
            self.record_effects(instance, &decided).await?;
            for (decision, i) in decided.events.iter().zip(0u32..) {
                let decision_id = command_event_id(input_id, i);
                for (command, j) in P::commands(decision).into_iter().zip(0u32..) {
                    let command_id = command_event_id(decision_id, j);
                    let rejected = Uuid::new_v5(&command_id, b"rejected");
                    // A decision replayed after a crash: if its command was refused and the
                    // refusal decided on, the refusal stands. Dispatching it again could
                    // apply it now (funds arrived meanwhile) on top of the compensation
                    // already decided; instead, the refusal's decision is replayed (its
                    // commands may not have gone out before the crash).
                    if decided.repeated && self.decided_on(instance, rejected).await? {
                        let reason = String::new(); // not decided on again: recorded
                        inputs.push_back((rejected, Input::Rejected { command, reason }));
                        continue;
                    }
                    let dispatched = Dispatched {
                        command_id,
                        correlation_id: metadata.correlation_id,
                        command: command.clone(),
                    };
                    match self.dispatcher.dispatch(dispatched).await {
                        Ok(()) => {}
                        Err(DispatchError::Rejected(reason)) => {
                            debug!(%command_id, ?command, %reason, "command refused");
                            inputs.push_back((rejected, Input::Rejected { command, reason }));
                        }
                        Err(DispatchError::Failed(error)) => return Err(Failure::Retry(error)),
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether input `input_id` was decided on with at least one recorded decision.
    async fn decided_on(&self, instance: &str, input_id: Uuid) -> Result<bool, Failure> {
        let stream = Repository::<Instance<P>, S>::stream_id(instance);
        let first = command_event_id(input_id, 0);
        let found = self
            .instances
            .store()
            .event_by_id(&stream, first)
            .await
            .map_err(|e| Failure::Retry(e.into()))?;
        Ok(found.is_some())
    }

    /// Stores the timers the decisions set or cancel (each with its decision's version)
    /// and whether the instance is still open.
    async fn record_effects(
        &self,
        instance: &str,
        decided: &annals_core::Executed<Instance<P>>,
    ) -> Result<(), Failure> {
        let first = decided.version + 1 - decided.events.len() as u64;
        let now = chrono::Utc::now();
        for (decision, version) in decided.events.iter().zip(first..) {
            for change in P::timers(decision) {
                let (name, due_at) = match change {
                    TimerChange::Set { name, after } => (
                        name,
                        Some(
                            now + chrono::Duration::from_std(after)
                                .unwrap_or(chrono::Duration::MAX),
                        ),
                    ),
                    TimerChange::Cancel { name } => (name, None),
                };
                let timer = Timer {
                    process: P::TYPE.to_owned(),
                    instance: instance.to_owned(),
                    name,
                    due_at,
                    version,
                };
                self.processes.put_timer(&timer).await.map_err(backend)?;
            }
        }
        if !decided.events.is_empty() {
            let open = !decided.state.0.is_finished();
            self.processes
                .put_instance(P::TYPE, instance, open)
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    /// Fires the due timers: each is an input decided once (keyed by the timer and the
    /// version that set it), then marked fired.
    async fn fire_timers(&self) -> Result<(), Failure> {
        let due = self
            .processes
            .claim_due_timers(
                P::TYPE,
                chrono::Utc::now(),
                self.timer_claim,
                TIMERS_PER_TICK,
            )
            .await
            .map_err(backend)?;
        for timer in due {
            let key = format!(
                "{}/{}/{}/{}",
                P::TYPE,
                timer.instance,
                timer.name,
                timer.version
            );
            let input_id = Uuid::new_v5(&Uuid::NAMESPACE_OID, key.as_bytes());
            let span = tracing::debug_span!("annals.process.timer", process = P::TYPE, instance = %timer.instance, timer = %timer.name);
            let input = Input::Timer {
                name: timer.name.clone(),
            };
            self.decide(&timer.instance, input_id, input, Metadata::default())
                .instrument(span)
                .await?;
            self.processes.timer_fired(&timer).await.map_err(backend)?;
        }
        Ok(())
    }

    async fn react(&self, raw: &RecordedEvent) -> Result<(), Failure> {
        let event = decode_event::<P::Observed>(raw, &self.upcasters)
            .map_err(|e| Failure::Poison(e.into()))?;
        let Some(instance) = P::instance(&event) else {
            return Ok(());
        };
        // One decision per (process manager, event): keyed by both.
        let input_id = Uuid::new_v5(&raw.event_id, P::TYPE.as_bytes());
        let span = tracing::info_span!("annals.process", process = P::TYPE, %instance, event = %raw.event_id);
        // The decision, and the commands it dispatches, continue the event's trace.
        annals_core::trace::follow(&span, &raw.metadata, annals_core::trace::Follow::Parent);
        self.decide(
            &instance,
            input_id,
            Input::Event(event),
            Metadata::caused_by(raw),
        )
        .instrument(span)
        .await
    }
}

/// A store failure of the timers or instances: the worker restarts after a backoff.
fn backend(error: crate::Error) -> Failure {
    Failure::Unavailable(error.into())
}

impl<P, S, T, D, C> Subscriber<C> for ProcessRuntime<P, S, T, D>
where
    P: ProcessManager,
    S: EventStore + SnapshotStore + 'static,
    T: ProcessStore,
    D: Dispatcher<P::Command>,
    C: Checkpoints,
{
    fn name(&self) -> &str {
        P::TYPE
    }

    fn kind(&self) -> &'static str {
        "process-manager"
    }

    fn event_types(&self) -> Option<Vec<String>> {
        Some(
            event_types_of::<P::Observed>()
                .map(|names| names.iter().map(|n| (*n).to_owned()).collect())
                .unwrap_or_default(),
        )
    }

    fn retry(&self) -> RetryPolicy {
        self.retry
    }

    fn on_failure(&self) -> FailurePolicy {
        self.on_failure
    }

    async fn tick(&self) -> Result<(), Failure> {
        self.fire_timers().await?;
        if let Ok((open, timers)) = self.processes.process_counts(P::TYPE).await {
            metrics::gauge!("annals_process_open_instances", "subscription" => P::TYPE)
                .set(open as f64);
            metrics::gauge!("annals_process_pending_timers", "subscription" => P::TYPE)
                .set(timers as f64);
        }
        Ok(())
    }

    async fn details(&self) -> Vec<(&'static str, u64)> {
        match self.processes.process_counts(P::TYPE).await {
            Ok((open, timers)) => vec![("open_instances", open), ("pending_timers", timers)],
            Err(error) => {
                tracing::warn!(%error, "cannot count open instances and timers");
                Vec::new()
            }
        }
    }

    async fn deliver(&self, events: &[RecordedEvent]) -> Result<(), Failure> {
        for raw in events {
            self.react(raw).await?;
        }
        Ok(())
    }
}
