//! The consumer's loop: pull messages, handle them a batch at a time, acknowledge after the
//! commit (confirmed by the server), hold the ones that wait for a predecessor, purge old
//! inbox rows; restart after a broker or database failure, stop for good on one retrying
//! cannot fix.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use annals_projections::{
    CancellationToken, Checkpoints, EngineOptions, Failure, PgCheckpoints, Projection,
    SubscriptionState, WorkerStatus,
};
use async_nats::jetstream::{self, consumer::pull::MessagesErrorKind, AckKind};
use futures_util::{future::join_all, FutureExt, StreamExt};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn, Instrument};

use super::{
    batch::{Abort, Decision, Item},
    message::StoredMessage,
    store::InboxSql,
    Connection, Inner,
};
use crate::headers::BusEvent;

/// A delivered message, decoded once.
struct Delivery {
    message: jetstream::Message,
    stored: StoredMessage,
    event: crate::Result<BusEvent>,
    delivered: u64,
    /// When it was received or last reported in progress.
    since: Instant,
}

impl Delivery {
    fn new(message: jetstream::Message) -> Self {
        let (sequence, delivered) = message
            .info()
            .map(|i| (i.stream_sequence, u64::try_from(i.delivered).unwrap_or(1)))
            .unwrap_or((0, 1));
        let stored = StoredMessage::new(
            &message.subject,
            sequence,
            message.headers.as_ref(),
            &message.payload,
        );
        let event = stored.decode();
        Self {
            message,
            stored,
            event,
            delivered,
            since: Instant::now(),
        }
    }

    fn item(&self) -> Item<'_> {
        Item {
            stored: &self.stored,
            event: &self.event,
            delivered: self.delivered,
        }
    }
}

/// Why a session ended.
enum Stop {
    /// The failure policy halted it.
    Halted(String),
    /// Retrying cannot help (credentials, configuration, privileges).
    Failed(String),
    /// The broker or the database failed: start again after a backoff.
    Restart(String),
}

pub(crate) async fn run<P: Projection<PgCheckpoints>>(
    inner: Arc<Inner<P>>,
    checkpoints: PgCheckpoints,
    options: EngineOptions,
    status: WorkerStatus,
    token: CancellationToken,
) {
    let span = tracing::info_span!("annals.consumer", consumer = %inner.name);
    async {
        loop {
            if token.is_cancelled() {
                break;
            }
            match session(&inner, &checkpoints, &status, &token).await {
                Ok(()) => break,
                Err(Stop::Halted(error)) => {
                    status.set_state(SubscriptionState::Halted, Some(error));
                    return;
                }
                Err(Stop::Failed(error)) => {
                    error!(%error, "cannot start; not retrying (fix the cause and restart)");
                    status.set_state(SubscriptionState::Failed, Some(error));
                    return;
                }
                Err(Stop::Restart(error)) => {
                    warn!(%error, "consumer failed; restarting");
                    inner.reset_connection().await;
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = tokio::time::sleep(options.restart_backoff) => {}
                    }
                }
            }
        }
        status.set_state(SubscriptionState::Stopped, None);
    }
    .instrument(span)
    .await;
}

fn restart(e: impl std::fmt::Display) -> Stop {
    Stop::Restart(e.to_string())
}

async fn session<P: Projection<PgCheckpoints>>(
    inner: &Inner<P>,
    checkpoints: &PgCheckpoints,
    status: &WorkerStatus,
    token: &CancellationToken,
) -> Result<(), Stop> {
    let connection = inner.connection().await.map_err(|e| {
        if e.is_retryable() {
            Stop::Restart(e.to_string())
        } else {
            Stop::Failed(e.to_string())
        }
    })?;
    let mut tx = checkpoints.begin_untracked().await.map_err(restart)?;
    if let Err(e) = inner.projection.setup(&mut tx).await {
        return Err(match annals_projections::setup_failure(e) {
            Failure::Poison(e) => Stop::Failed(e.to_string()),
            other => Stop::Restart(other.to_string()),
        });
    }
    checkpoints.commit_untracked(tx).await.map_err(restart)?;
    let sql = InboxSql::new(checkpoints);
    let options = &inner.options;
    let mut messages = connection
        .consumer
        .stream()
        // Two batches' worth in flight: the next batch is there when this one commits.
        .max_messages_per_batch(options.batch * 2)
        .messages()
        .await
        .map_err(restart)?;
    status.set_state(SubscriptionState::Running, None);
    info!("consuming");
    let purge_every =
        (options.retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut next_purge = Instant::now();
    let mut waiting: Vec<Delivery> = Vec::new();
    // Acknowledgements of committed batches, confirmed in the background while the next
    // batch runs (they need not be in order; a lost one is a redelivery the inbox skips).
    let mut acking: JoinSet<()> = JoinSet::new();
    loop {
        let first = tokio::select! {
            () = token.cancelled() => {
                while acking.join_next().await.is_some() {}
                return Ok(());
            }
            next = messages.next() => Some(next),
            () = tokio::time::sleep(options.recheck), if !waiting.is_empty() => None,
            () = tokio::time::sleep_until(next_purge.into()) => {
                next_purge = Instant::now() + purge_every;
                purge(&sql, checkpoints, &inner.name, options.retention).await;
                None
            }
        };
        let mut fresh = Vec::new();
        match first {
            Some(Some(Ok(message))) => fresh.push(message),
            Some(Some(Err(e))) if e.kind() == MessagesErrorKind::MissingHeartbeat => {
                debug!("missed a heartbeat");
            }
            Some(Some(Err(e))) => return Err(restart(format!("pulling messages: {e}"))),
            Some(None) => return Err(restart("the message stream ended")),
            None => {}
        }
        while fresh.len() < options.batch {
            match messages.next().now_or_never() {
                Some(Some(Ok(message))) => fresh.push(message),
                _ => break,
            }
        }
        if let Some(info) = fresh.last().and_then(|m| m.info().ok()) {
            // What the bus still holds for the consumer after this batch, and how old
            // the newest message of the batch is.
            let name = inner.name.clone();
            metrics::gauge!("annals_subscription_lag_events", "subscription" => name.clone())
                .set(info.pending as f64);
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
            let age = (i128::from(now) - info.published.unix_timestamp_nanos()) as f64 / 1e9;
            metrics::gauge!("annals_subscription_lag_seconds", "subscription" => name)
                .set(if info.pending == 0 { 0.0 } else { age.max(0.0) });
        }
        let mut deliveries: Vec<Delivery> = std::mem::take(&mut waiting);
        deliveries.extend(fresh.into_iter().map(Delivery::new));
        if deliveries.is_empty() {
            continue;
        }
        let decisions = decide(inner, &sql, checkpoints, &connection, &deliveries).await?;
        let mut acks = Vec::new();
        let mut halt = None;
        let mut handled = 0;
        for (mut delivery, decision) in deliveries.into_iter().zip(decisions) {
            match decision {
                Decision::Done | Decision::Lettered => {
                    handled += 1;
                    let kind = if decision == Decision::Done {
                        AckKind::Ack
                    } else {
                        AckKind::Term
                    };
                    acks.push(async move {
                        // Confirmed by the server; a lost one means a redelivery, which
                        // the inbox recognises.
                        if let Err(e) = delivery.message.double_ack_with(kind).await {
                            debug!(error = %e, "acknowledgement not confirmed; a redelivery will be skipped");
                        }
                    }.boxed());
                }
                Decision::Retry(delay) => acks.push(
                    async move {
                        let _ = delivery.message.ack_with(AckKind::Nak(Some(delay))).await;
                    }
                    .boxed(),
                ),
                Decision::Early => {
                    // Held for order: tell JetStream it is in progress, so it is not
                    // redelivered meanwhile (and never counted as a failed delivery).
                    if delivery.since.elapsed() > options.ack_wait / 3 {
                        let _ = delivery.message.ack_with(AckKind::Progress).await;
                        delivery.since = Instant::now();
                    }
                    waiting.push(delivery);
                }
                Decision::Halt(error) => {
                    if halt.is_none() {
                        let position = delivery
                            .event
                            .as_ref()
                            .map(|b| b.event.position)
                            .unwrap_or(annals_core::Position::START);
                        let attempts = u32::try_from(delivery.delivered).unwrap_or(u32::MAX);
                        halt = Some((position, error, attempts));
                    }
                }
            }
        }
        // Keep at most a few batches of acknowledgements outstanding.
        while acking.len() > 4 {
            acking.join_next().await;
        }
        acking.spawn(join_all(acks).map(drop));
        while acking.try_join_next().is_some() {}
        status.handled(handled);
        if let Some((at, error, attempts)) = halt {
            while acking.join_next().await.is_some() {}
            error!(%error, "halted on a message that keeps failing");
            checkpoints
                .halt(&inner.name, at, &error, attempts)
                .await
                .map_err(restart)?;
            return Err(Stop::Halted(error));
        }
    }
}

/// Deletes the consumer's inbox rows older than `retention`, in small batches.
async fn purge(sql: &InboxSql, checkpoints: &PgCheckpoints, consumer: &str, retention: Duration) {
    let before =
        chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    match sql.purge(checkpoints.pool(), consumer, before, 1000).await {
        Ok(0) => {}
        Ok(n) => debug!(rows = n, "purged old inbox rows"),
        Err(e) => warn!(error = %e, "cannot purge the inbox; will try again"),
    }
}

/// Decides every delivery: the whole batch in one transaction, or, when the handler fails
/// on it, each message on its own (in stream order) to find the one that fails.
async fn decide<P: Projection<PgCheckpoints>>(
    inner: &Inner<P>,
    sql: &InboxSql,
    checkpoints: &PgCheckpoints,
    connection: &Connection,
    deliveries: &[Delivery],
) -> Result<Vec<Decision>, Stop> {
    let items: Vec<Item<'_>> = deliveries.iter().map(Delivery::item).collect();
    match inner.process(sql, checkpoints, connection, &items).await {
        Ok(decisions) => return Ok(decisions),
        Err(Abort::Store(e)) => return Err(restart(e)),
        Err(Abort::Handler(e)) => {
            debug!(error = %e, "the batch failed; handling its messages one by one")
        }
    }
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|i| match items[*i].event {
        Ok(bus) => (bus.event.stream_id.clone(), bus.event.stream_version),
        Err(_) => (String::new(), 0),
    });
    let mut decisions = vec![Decision::Early; items.len()];
    for i in order {
        let one = std::slice::from_ref(&items[i]);
        decisions[i] = match inner.process(sql, checkpoints, connection, one).await {
            Ok(mut d) => d.pop().unwrap_or(Decision::Early),
            Err(Abort::Store(e)) => return Err(restart(e)),
            Err(Abort::Handler(e)) => match inner.failed(sql, checkpoints, &items[i], e).await {
                Ok(decision) => decision,
                Err(Abort::Store(e)) => return Err(restart(e)),
                Err(Abort::Handler(e)) => Decision::Halt(e.to_string()),
            },
        };
    }
    Ok(decisions)
}
