//! One projection's worker: lease, catch up in batches, follow live, retry, halt or
//! dead-letter.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use annals_core::{
    decode_event, Envelope, EventStore, Position, ReadAll, RecordedEvent, Upcasters,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

use crate::{
    CheckpointStore, DeadLetter, EngineOptions, Error, FailurePolicy, Projection, ProjectionState,
    Result,
};

/// What a running worker publishes about itself.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) checkpoint: watch::Sender<Position>,
    pub(crate) state: watch::Sender<(ProjectionState, Option<String>)>,
    rate: Mutex<VecDeque<(Instant, usize)>>,
}

const RATE_WINDOW: Duration = Duration::from_secs(10);

/// How often a running worker logs its lag and throughput.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

impl Shared {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            checkpoint: watch::channel(Position::START).0,
            state: watch::channel((ProjectionState::Stopped, None)).0,
            rate: Mutex::default(),
        }
    }

    fn set_state(&self, state: ProjectionState, error: Option<String>) {
        self.state.send_replace((state, error));
    }

    fn processed(&self, events: usize) {
        let mut rate = self.rate.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        rate.push_back((now, events));
        while rate
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
        {
            rate.pop_front();
        }
    }

    /// Events per second over the last few seconds.
    pub(crate) fn events_per_second(&self) -> f64 {
        let rate = self.rate.lock().unwrap_or_else(|p| p.into_inner());
        let Some((first, _)) = rate.front() else {
            return 0.0;
        };
        let events: usize = rate.iter().map(|(_, n)| n).sum();
        let span = first.elapsed().max(Duration::from_secs(1));
        events as f64 / span.as_secs_f64()
    }
}

pub(crate) struct Worker<P, S, C> {
    pub(crate) projection: Arc<P>,
    pub(crate) store: S,
    pub(crate) checkpoints: C,
    pub(crate) options: EngineOptions,
    pub(crate) upcasters: Arc<Upcasters>,
    pub(crate) shared: Arc<Shared>,
}

impl<P, S, C> Worker<P, S, C>
where
    P: Projection<C>,
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
{
    fn name(&self) -> &str {
        &self.shared.name
    }

    pub(crate) async fn run(self, token: CancellationToken) {
        let span = tracing::info_span!("annals.projection", projection = %self.shared.name);
        self.run_inner(token).instrument(span).await;
    }

    async fn run_inner(self, token: CancellationToken) {
        loop {
            if token.is_cancelled() {
                break;
            }
            let mut lease = if self.options.use_lease {
                self.shared.set_state(ProjectionState::Standby, None);
                match self.acquire_lease(&token).await {
                    Some(lease) => Some(lease),
                    None => break,
                }
            } else {
                None
            };
            let outcome = self.run_leased(lease.as_mut(), &token).await;
            if let Some(lease) = lease.take() {
                self.checkpoints.release(lease).await;
            }
            match outcome {
                Ok(()) | Err(Error::ShutDown) => break,
                Err(Error::Halted { error, .. }) => {
                    self.shared.set_state(ProjectionState::Halted, Some(error));
                    return;
                }
                Err(error @ Error::Fenced { .. }) => {
                    warn!(%error, "another worker moved the checkpoint; stepping down");
                }
                Err(error) => {
                    warn!(%error, "projection worker failed; restarting");
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(self.options.restart_backoff) => {}
                    }
                }
            }
        }
        self.shared.set_state(ProjectionState::Stopped, None);
    }

    /// Waits for the lease; `None` when shut down first.
    async fn acquire_lease(&self, token: &CancellationToken) -> Option<C::Lease> {
        loop {
            match self.checkpoints.try_lease(self.name()).await {
                Ok(Some(lease)) => {
                    info!("lease acquired");
                    return Some(lease);
                }
                Ok(None) => debug!("another worker holds the lease; standing by"),
                Err(error) => warn!(%error, "cannot take the lease"),
            }
            tokio::select! {
                _ = token.cancelled() => return None,
                _ = tokio::time::sleep(self.options.lease_retry) => {}
            }
        }
    }

    async fn run_leased(
        &self,
        mut lease: Option<&mut C::Lease>,
        token: &CancellationToken,
    ) -> Result<()> {
        let mut tx = self.checkpoints.begin_untracked().await?;
        self.projection
            .setup(&mut tx)
            .await
            .map_err(|source| Error::Handler {
                projection: self.name().to_owned(),
                source,
            })?;
        self.checkpoints.commit_untracked(tx).await?;

        let mut checkpoint = self
            .checkpoints
            .checkpoint(self.name())
            .await?
            .map_or(Position::START, |c| c.position);
        self.shared.checkpoint.send_replace(checkpoint);
        self.shared.set_state(ProjectionState::Running, None);
        let types = self.projection.event_types();
        if types.is_empty() {
            // An empty filter reads nothing, and the checkpoint would race past every event.
            return Err(Error::Halted {
                projection: self.name().to_owned(),
                error: "the projection reads no event types (override Projection::event_types)"
                    .to_owned(),
            });
        }
        let batch = self.options.batch_size.max(1);
        let mut lease_checked = Instant::now();
        let mut reported = Instant::now();
        info!(%checkpoint, "running");

        loop {
            if token.is_cancelled() {
                return Ok(());
            }
            if let Some(lease) = lease.as_deref_mut() {
                if lease_checked.elapsed() >= self.options.lease_check {
                    if !self.checkpoints.lease_alive(lease).await {
                        return Err(Error::backend("the lease connection was lost"));
                    }
                    lease_checked = Instant::now();
                }
            }
            let head = self.store.head().await?;
            if reported.elapsed() >= PROGRESS_EVERY {
                info!(
                    %checkpoint,
                    %head,
                    lag = head.sequence().saturating_sub(checkpoint.sequence()),
                    events_per_second = self.shared.events_per_second(),
                    "progress"
                );
                reported = Instant::now();
            }
            let read = ReadAll::after(checkpoint)
                .limit(batch)
                .event_types(types.iter().cloned());
            let events = self.store.read_all(read).await?;
            let Some(last) = events.last() else {
                if head > checkpoint {
                    // Nothing of ours up to the head: move past what we do not read, so lag
                    // and wait_until_caught_up see we are current.
                    let tx = self.checkpoints.begin(self.name(), checkpoint).await?;
                    self.checkpoints.commit(tx, self.name(), head).await?;
                    checkpoint = head;
                    self.shared.checkpoint.send_replace(checkpoint);
                    continue;
                }
                tokio::select! {
                    _ = token.cancelled() => return Ok(()),
                    woke = self.store.wait_for_events(checkpoint, self.options.idle_wait) => { woke?; }
                }
                continue;
            };
            // A short page holds every event of ours up to `head` (read before it): the
            // checkpoint may move to the head.
            let mut to = last.position;
            if events.len() < batch && head > to {
                to = head;
            }
            checkpoint = self.process(&events, checkpoint, to, token).await?;
            self.shared.checkpoint.send_replace(checkpoint);
        }
    }

    /// Applies `events` (after `from`), moving the checkpoint to `to`.
    async fn process(
        &self,
        events: &[RecordedEvent],
        from: Position,
        to: Position,
        token: &CancellationToken,
    ) -> Result<Position> {
        let span =
            tracing::info_span!("annals.projection.batch", events = events.len(), %from, %to);
        async {
            let started = Instant::now();
            let decoded: Vec<Result<Envelope<P::Event>, annals_core::Error>> = events
                .iter()
                .map(|e| decode_event(e, &self.upcasters))
                .collect();
            if decoded.iter().all(Result::is_ok) {
                let envelopes: Vec<Envelope<P::Event>> = decoded.into_iter().flatten().collect();
                let mut tx = self.checkpoints.begin(self.name(), from).await?;
                match self.projection.handle_batch(&envelopes, &mut tx).await {
                    Ok(()) => {
                        self.checkpoints.commit(tx, self.name(), to).await?;
                        self.shared.processed(events.len());
                        debug!(
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "batch committed"
                        );
                        return Ok(to);
                    }
                    Err(error) => {
                        drop(tx);
                        debug!(%error, "batch failed; replaying it one event at a time");
                    }
                }
                let decoded: Vec<_> = envelopes.into_iter().map(Ok).collect();
                self.one_by_one(events, decoded, from, to, token).await
            } else {
                self.one_by_one(events, decoded, from, to, token).await
            }
        }
        .instrument(span)
        .await
    }

    async fn one_by_one(
        &self,
        events: &[RecordedEvent],
        decoded: Vec<Result<Envelope<P::Event>, annals_core::Error>>,
        from: Position,
        to: Position,
        token: &CancellationToken,
    ) -> Result<Position> {
        let mut at = from;
        let last = events.len().saturating_sub(1);
        for (i, (raw, envelope)) in events.iter().zip(decoded).enumerate() {
            let target = if i == last { to } else { raw.position };
            at = self.apply_one(raw, envelope, at, target, token).await?;
            self.shared.processed(1);
        }
        Ok(at)
    }

    async fn apply_one(
        &self,
        raw: &RecordedEvent,
        envelope: Result<Envelope<P::Event>, annals_core::Error>,
        from: Position,
        to: Position,
        token: &CancellationToken,
    ) -> Result<Position> {
        let policy = self.projection.retry();
        let mut attempts = 0;
        let error = loop {
            attempts += 1;
            let error = match &envelope {
                // Decoding is deterministic: retrying cannot help.
                Err(e) => break e.to_string(),
                Ok(envelope) => {
                    let mut tx = self.checkpoints.begin(self.name(), from).await?;
                    match self.projection.handle(envelope, &mut tx).await {
                        Ok(()) => {
                            self.checkpoints.commit(tx, self.name(), to).await?;
                            return Ok(to);
                        }
                        Err(e) => e.to_string(),
                    }
                }
            };
            if attempts >= policy.attempts.max(1) {
                break error;
            }
            warn!(attempts, %error, stream = %raw.stream_id, version = raw.stream_version, "handler failed; retrying");
            tokio::select! {
                _ = token.cancelled() => return Err(Error::ShutDown),
                _ = tokio::time::sleep(policy.delay(attempts)) => {}
            }
        };
        match self.projection.on_failure() {
            FailurePolicy::Halt => {
                let message = format!(
                    "event {} ({} {}@{}) failed after {attempts} attempts: {error}",
                    raw.position, raw.event_type, raw.stream_id, raw.stream_version
                );
                error!(%message, "halting projection");
                self.checkpoints.halt(self.name(), from, &message).await?;
                Err(Error::Halted {
                    projection: self.name().to_owned(),
                    error: message,
                })
            }
            FailurePolicy::DeadLetter => {
                let letter = DeadLetter::new(self.name(), raw, error, attempts);
                warn!(%letter, "dead-lettering event");
                let mut tx = self.checkpoints.begin(self.name(), from).await?;
                self.checkpoints
                    .record_dead_letter(&mut tx, &letter)
                    .await?;
                self.checkpoints.commit(tx, self.name(), to).await?;
                Ok(to)
            }
        }
    }
}
