//! One subscription's worker: lease, catch up in batches, follow live; per batch the
//! checkpoint's lock, the effect and the commit; on failure retries, then halt, dead letter
//! or park.

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use annals_core::{
    trace::{self, Follow},
    EventStore, Position, ReadAll, RecordedEvent,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

use super::{Failure, Shared, Subscriber, SubscriptionState};
use crate::{
    policy::jitter, Checkpoints, DeadLetter, DeadLetters, EngineOptions, Error, FailurePolicy,
    Leases, Result,
};

/// How often a running worker logs its lag and throughput.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The most events a batch's span links to.
const MAX_LINKS: usize = 32;

/// How often a running worker measures the horizon lag (a count of held-back events).
const HORIZON_EVERY: Duration = Duration::from_secs(5);

pub(crate) struct Worker<K, S, C> {
    pub(crate) kind: Arc<K>,
    pub(crate) store: S,
    pub(crate) checkpoints: C,
    pub(crate) options: EngineOptions,
    pub(crate) shared: Arc<Shared>,
    /// Whether a letter parks its stream although the policy is not `Park` (an event the
    /// operator skipped with `--park-stream`): batches then look for parked streams too.
    pub(crate) parking_letters: AtomicBool,
}

/// A page of events read from the log.
struct Page {
    events: Vec<RecordedEvent>,
    /// For a short page, the head read before it; `None` for a full page.
    head: Option<Position>,
}

/// The distinct streams of a batch.
fn streams_of(events: &[RecordedEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.stream_id.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// The error of a failure that is the infrastructure's, not the event's.
fn unavailable(name: &str, error: &Failure) -> Error {
    Error::Unavailable {
        subscription: name.to_owned(),
        error: error.to_string(),
    }
}

impl<K, S, C> Worker<K, S, C>
where
    K: Subscriber<C>,
    S: EventStore + Clone + 'static,
    C: Checkpoints + DeadLetters + Leases,
{
    fn name(&self) -> &str {
        &self.shared.name
    }

    pub(crate) async fn run(self, token: CancellationToken) {
        let span = tracing::info_span!(
            "annals.subscription",
            subscription = %self.shared.name,
            kind = self.kind.kind()
        );
        self.run_inner(token).instrument(span).await;
    }

    async fn run_inner(self, token: CancellationToken) {
        loop {
            if token.is_cancelled() {
                break;
            }
            let mut lease = if self.options.use_lease {
                self.shared.set_state(SubscriptionState::Standby, None);
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
                    self.shared
                        .set_state(SubscriptionState::Halted, Some(error));
                    if !self.wait_for_unhalt(&token).await {
                        break;
                    }
                    info!("the halt was cleared (skip, reset or rebuild); resuming");
                }
                Err(Error::Failed { error, .. }) => {
                    error!(%error, "cannot start; not retrying (fix the cause and restart)");
                    self.shared
                        .set_state(SubscriptionState::Failed, Some(error));
                    return;
                }
                Err(error @ Error::Fenced { .. }) => {
                    // Routine after a rebuild's swap, a reset or a skip; a split brain shows
                    // as this repeating.
                    info!(%error, "the checkpoint moved under this worker; restarting from it");
                }
                Err(error) => {
                    warn!(%error, "worker failed; restarting");
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(jitter(self.options.restart_backoff)) => {}
                    }
                }
            }
        }
        self.shared.set_state(SubscriptionState::Stopped, None);
    }

    /// While halted: waits until an operator clears the halt (`skip` dead-letters the event,
    /// `reset` or a rebuild's swap moves the checkpoint); `false` when shut down first.
    async fn wait_for_unhalt(&self, token: &CancellationToken) -> bool {
        loop {
            tokio::select! {
                _ = token.cancelled() => return false,
                _ = tokio::time::sleep(self.options.lease_retry) => {}
            }
            match self.checkpoints.checkpoint(self.name()).await {
                Ok(record) if record.as_ref().is_none_or(|r| r.halted.is_none()) => return true,
                Ok(_) => {}
                Err(error) => debug!(%error, "cannot read the checkpoint while halted"),
            }
        }
    }

    /// Whether this batch must look for parked streams.
    fn parks(&self) -> bool {
        self.kind.on_failure() == FailurePolicy::Park
            || self.parking_letters.load(Ordering::Relaxed)
    }

    /// Of the streams of `events`, those parked behind a dead letter.
    async fn parked(
        &self,
        tx: &mut C::Tx,
        events: &[RecordedEvent],
    ) -> Result<std::collections::HashSet<String>> {
        let every_letter = self.kind.on_failure() == FailurePolicy::Park;
        self.checkpoints
            .streams_with_dead_letters(tx, self.name(), &streams_of(events), every_letter)
            .await
    }

    /// Makes a batch's span continue its events' traces (feature `otel` of annals-core): one
    /// event handled live becomes the parent; a catch-up batch, or one of several events,
    /// links to them (a few dozen at most), never adopting a parent in an old trace.
    fn follow_traces(&self, span: &tracing::Span, events: &[RecordedEvent], live: bool) {
        match (self.options.trace, events) {
            (Follow::Off, _) => {}
            (Follow::Parent, [one]) if live => trace::follow(span, &one.metadata, Follow::Parent),
            _ => {
                for event in events.iter().take(MAX_LINKS) {
                    trace::follow(span, &event.metadata, Follow::Link);
                }
            }
        }
    }

    /// Sets the processing-lag gauges: events from the checkpoint to the head, and the age
    /// of the oldest event not handled yet (0 when caught up).
    fn record_lag(
        &self,
        checkpoint: Position,
        head: Option<Position>,
        first: Option<&RecordedEvent>,
    ) {
        let meters = &self.shared.meters;
        if let Some(head) = head {
            let lag = head.sequence().saturating_sub(checkpoint.sequence());
            meters.lag_events.set(lag as f64);
        }
        let seconds = first.map_or(0.0, |e| {
            (chrono::Utc::now() - e.recorded_at)
                .num_milliseconds()
                .max(0) as f64
                / 1000.0
        });
        meters.lag_seconds.set(seconds);
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
        self.kind
            .setup(&mut tx)
            .await
            .map_err(|failure| match failure {
                Failure::Poison(error) => Error::Failed {
                    subscription: self.name().to_owned(),
                    error: error.to_string(),
                },
                other => Error::Unavailable {
                    subscription: self.name().to_owned(),
                    error: format!("setup: {other}"),
                },
            })?;
        self.checkpoints.commit_untracked(tx).await?;
        let parking_letters = self
            .checkpoints
            .dead_letters(Some(self.name()))
            .await?
            .iter()
            .any(|d| d.parks_stream);
        self.parking_letters
            .store(parking_letters, Ordering::Relaxed);

        let mut checkpoint = self
            .checkpoints
            .checkpoint(self.name())
            .await?
            .map_or(Position::START, |c| c.position);
        self.shared.checkpoint.send_replace(checkpoint);
        self.shared.set_state(SubscriptionState::Running, None);
        let types = self.kind.event_types();
        if types.as_ref().is_some_and(Vec::is_empty) {
            // An empty filter reads nothing, and the checkpoint would race past every event.
            return Err(Error::Halted {
                projection: self.name().to_owned(),
                error: "the subscription reads no event types (override event_types)".to_owned(),
            });
        }
        let batch = self.options.batch_size.max(1);
        let mut lease_checked = Instant::now();
        let mut reported = Instant::now();
        let mut ticked = Instant::now();
        let mut horizon_checked = Instant::now() - HORIZON_EVERY;
        let mut at_tail = true;
        let mut prefetched: Option<Page> = None;
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
            if ticked.elapsed() >= self.options.idle_wait {
                match self.kind.tick().await {
                    Ok(()) => {}
                    Err(failure @ Failure::Unavailable(_)) => {
                        return Err(unavailable(self.name(), &failure));
                    }
                    Err(failure) => warn!(%failure, "tick failed; trying again next time"),
                }
                ticked = Instant::now();
            }
            if horizon_checked.elapsed() >= HORIZON_EVERY {
                if let Ok(held_back) = self.store.held_back().await {
                    self.shared.meters.horizon_lag.set(held_back as f64);
                }
                horizon_checked = Instant::now();
            }
            if reported.elapsed() >= PROGRESS_EVERY {
                let letters = self.checkpoints.dead_letters(Some(self.name())).await?;
                self.shared.meters.dead_letters.set(letters.len() as f64);
                let head = self.store.head().await?;
                info!(
                    %checkpoint,
                    %head,
                    lag = head.sequence().saturating_sub(checkpoint.sequence()),
                    events_per_second = self.shared.events_per_second(),
                    "progress"
                );
                reported = Instant::now();
            }
            let page = match prefetched.take() {
                Some(page) => page,
                None => {
                    self.page(checkpoint, types.as_deref(), batch, at_tail)
                        .await?
                }
            };
            at_tail = page.head.is_some();
            self.record_lag(checkpoint, page.head, page.events.first());
            let Some(last) = page.events.last() else {
                let head = page.head.unwrap_or(checkpoint);
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
            let last = last.position;
            checkpoint = match page.head {
                // A short page holds every event of ours up to `head` (read before it): the
                // checkpoint may move to the head.
                Some(head) => {
                    self.process(&page.events, checkpoint, last.max(head), true, token)
                        .await?
                }
                // A full page: catching up. Read the next page while this one is handled.
                None => {
                    let (done, next) = tokio::join!(
                        self.process(&page.events, checkpoint, last, false, token),
                        self.page(last, types.as_deref(), batch, false)
                    );
                    // A failed read-ahead is just read again.
                    prefetched = next.ok();
                    done?
                }
            };
            self.shared.checkpoint.send_replace(checkpoint);
        }
    }

    /// The page of events after `after`. A short page comes with the head read before it
    /// (every event of ours up to that head is in the page). `at_tail` reads the head first;
    /// otherwise the head is read only when the page turns out short (and the page again
    /// after it), which spares a query per page while catching up.
    async fn page(
        &self,
        after: Position,
        types: Option<&[String]>,
        batch: usize,
        at_tail: bool,
    ) -> Result<Page> {
        let read = || {
            let read = ReadAll::after(after).limit(batch);
            match types {
                Some(types) => read.event_types(types.iter().cloned()),
                None => read,
            }
        };
        let head = if at_tail {
            Some(self.store.head().await?)
        } else {
            None
        };
        let events = self.store.read_all(read()).await?;
        if events.len() >= batch {
            return Ok(Page { events, head: None });
        }
        if head.is_some() {
            return Ok(Page { events, head });
        }
        let head = self.store.head().await?;
        let events = self.store.read_all(read()).await?;
        let head = (events.len() < batch).then_some(head);
        Ok(Page { events, head })
    }

    /// Handles `events` (after `from`) as one batch, moving the checkpoint to `to`; on a
    /// failure, one event at a time to isolate it.
    async fn process(
        &self,
        events: &[RecordedEvent],
        from: Position,
        to: Position,
        live: bool,
        token: &CancellationToken,
    ) -> Result<Position> {
        let span = tracing::info_span!("annals.batch", events = events.len(), %from, %to);
        self.follow_traces(&span, events, live);
        async {
            let started = Instant::now();
            let mut tx = self.checkpoints.begin(self.name(), from).await?;
            if self.parks() {
                let parked = self.parked(&mut tx, events).await?;
                if !parked.is_empty() {
                    drop(tx);
                    return self.one_by_one(events, from, to, token).await;
                }
            }
            let handling = Instant::now();
            let outcome = match self.kind.deliver(events).await {
                Ok(()) => self.kind.apply(events, &mut tx).await,
                Err(failure) => Err(failure),
            };
            self.shared
                .meters
                .handler_seconds
                .record(handling.elapsed().as_secs_f64());
            match outcome {
                Ok(()) => {
                    self.checkpoints.commit(tx, self.name(), to).await?;
                    self.shared
                        .meters
                        .batch_seconds
                        .record(started.elapsed().as_secs_f64());
                    self.shared.processed(events.len());
                    debug!(
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "batch committed"
                    );
                    Ok(to)
                }
                Err(failure @ Failure::Unavailable(_)) => Err(unavailable(self.name(), &failure)),
                Err(failure) => {
                    drop(tx);
                    debug!(%failure, "batch failed; handling it one event at a time");
                    self.one_by_one(events, from, to, token).await
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn one_by_one(
        &self,
        events: &[RecordedEvent],
        from: Position,
        to: Position,
        token: &CancellationToken,
    ) -> Result<Position> {
        let mut at = from;
        let last = events.len().saturating_sub(1);
        for (i, event) in events.iter().enumerate() {
            let target = if i == last { to } else { event.position };
            at = self.handle_one(event, at, target, token).await?;
            self.shared.processed(1);
        }
        Ok(at)
    }

    /// One event, with retries, then the failure policy.
    async fn handle_one(
        &self,
        event: &RecordedEvent,
        from: Position,
        to: Position,
        token: &CancellationToken,
    ) -> Result<Position> {
        let policy = self.kind.on_failure();
        let retry = self.kind.retry();
        let mut attempts = 0;
        let error = loop {
            attempts += 1;
            let mut tx = self.checkpoints.begin(self.name(), from).await?;
            if self.parks() {
                let parked = self.parked(&mut tx, std::slice::from_ref(event)).await?;
                if !parked.is_empty() {
                    let mut letter = DeadLetter::new(
                        self.name(),
                        event,
                        format!(
                            "parked behind an earlier dead letter of stream {}",
                            event.stream_id
                        ),
                        0,
                    )
                    .parking(true);
                    letter.id = self
                        .checkpoints
                        .record_dead_letter(&mut tx, &letter)
                        .await?;
                    self.checkpoints.commit(tx, self.name(), to).await?;
                    debug!(%letter, "parked event");
                    return Ok(to);
                }
            }
            let one = std::slice::from_ref(event);
            let outcome = match self.kind.deliver(one).await {
                Ok(()) => self.kind.apply(one, &mut tx).await,
                Err(failure) => Err(failure),
            };
            let failure = match outcome {
                Ok(()) => {
                    self.checkpoints.commit(tx, self.name(), to).await?;
                    return Ok(to);
                }
                Err(failure) => failure,
            };
            drop(tx);
            match failure {
                Failure::Unavailable(_) => return Err(unavailable(self.name(), &failure)),
                Failure::Poison(e) => break e.to_string(),
                Failure::Retry(e) if attempts >= retry.attempts.max(1) => break e.to_string(),
                Failure::Retry(e) => {
                    warn!(attempts, error = %e, stream = %event.stream_id, version = event.stream_version, "handler failed; retrying");
                    tokio::select! {
                        _ = token.cancelled() => return Err(Error::ShutDown),
                        _ = tokio::time::sleep(retry.delay_with_jitter(attempts)) => {}
                    }
                }
            }
        };
        match policy {
            FailurePolicy::Halt => {
                let message = format!(
                    "event {} ({} {}@{}) failed after {attempts} attempts: {error}",
                    event.position, event.event_type, event.stream_id, event.stream_version
                );
                error!(%message, "halting (the CLI's `skip` moves the event to the dead letters)");
                self.checkpoints
                    .halt(self.name(), from, &message, attempts)
                    .await?;
                Err(Error::Halted {
                    projection: self.name().to_owned(),
                    error: message,
                })
            }
            FailurePolicy::DeadLetter | FailurePolicy::Park => {
                let mut letter = DeadLetter::new(self.name(), event, error, attempts)
                    .parking(policy == FailurePolicy::Park);
                let mut tx = self.checkpoints.begin(self.name(), from).await?;
                letter.id = self
                    .checkpoints
                    .record_dead_letter(&mut tx, &letter)
                    .await?;
                self.checkpoints.commit(tx, self.name(), to).await?;
                self.shared.meters.dead_letters_total.increment(1);
                warn!(%letter, "dead-lettered event");
                Ok(to)
            }
        }
    }
}
