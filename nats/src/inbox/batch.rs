//! One batch of delivered messages in one transaction: which apply now (each stream in
//! version order, after the version its stream last passed), which were applied before,
//! which wait for a predecessor, which are poison; the handler's writes, the inbox rows and
//! the streams' versions commit together.

use std::{collections::HashMap, time::Duration};

use annals_core::{decode_event, trace::Follow, Envelope, RecordedEvent};
use annals_projections::{
    Checkpoints, DeadLetter, DeadLetters, Error as EngineError, FailurePolicy, HandlerError,
    PgCheckpoints, PgTx, Projection,
};
use tracing::{debug, warn, Instrument};
use uuid::Uuid;

use super::{message::StoredMessage, store::InboxSql, Connection, Inner};
use crate::headers::BusEvent;

/// A message as the batch sees it.
pub(crate) struct Item<'a> {
    pub(crate) stored: &'a StoredMessage,
    pub(crate) event: &'a crate::Result<BusEvent>,
    /// Deliveries so far, this one included.
    pub(crate) delivered: u64,
}

/// What becomes of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Applied now, applied before, or passed over (a type the handler does not read):
    /// acknowledge.
    Done,
    /// Recorded as a dead letter (given up on, or parked): terminate it on the bus.
    Lettered,
    /// Its stream's previous event has not been passed yet: hold it, check again.
    Early,
    /// The handler failed: redeliver after this delay.
    Retry(Duration),
    /// Stop the consumer (the failure policy is to halt).
    Halt(String),
}

/// Why a batch did not commit.
pub(crate) enum Abort {
    /// The database failed: nothing of the batch is kept; the worker restarts.
    Store(EngineError),
    /// The handler failed on the batch: retry its messages one by one to find which.
    Handler(HandlerError),
}

impl From<EngineError> for Abort {
    fn from(e: EngineError) -> Self {
        Abort::Store(e)
    }
}

fn store_error(e: sqlx::Error) -> Abort {
    Abort::Store(EngineError::Store(annals_core::Error::backend(e)))
}

/// A dead letter for a message that may not even be an annals event.
fn letter_for(name: &str, item: &Item<'_>, error: String, attempts: u32) -> DeadLetter {
    let stored = item.stored;
    let event = match item.event {
        Ok(bus) => bus.event.clone(),
        Err(_) => {
            let header = |n: &str| {
                stored
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(n))
                    .map(|(_, v)| v.clone())
            };
            RecordedEvent {
                // A fresh id when the message has none: two such letters must not merge.
                event_id: header(crate::headers::CE_ID)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(Uuid::now_v7),
                stream_id: header(crate::headers::STREAM_ID)
                    .unwrap_or_else(|| stored.subject.clone()),
                stream_version: 0,
                position: annals_core::Position::START,
                event_type: header(crate::headers::CE_TYPE).unwrap_or_default(),
                schema_version: 0,
                recorded_at: chrono::Utc::now(),
                metadata: Default::default(),
                encoding: annals_core::Encoding::Json,
                payload: Vec::new(),
            }
        }
    };
    DeadLetter::new(name, &event, error, attempts).with_message(stored.to_bytes())
}

impl<P: Projection<PgCheckpoints>> Inner<P> {
    fn handles(&self, event_type: &str) -> bool {
        self.handled.iter().any(|t| t == event_type)
    }

    /// Locks `event`'s stream row and says whether the event was passed already (in the
    /// inbox, or its stream beyond it).
    async fn claim_one(
        &self,
        sql: &InboxSql,
        tx: &mut PgTx,
        event: &RecordedEvent,
    ) -> sqlx::Result<bool> {
        let claimed = sql
            .claim(
                tx,
                &self.name,
                std::slice::from_ref(&event.stream_id),
                &[event.event_id],
            )
            .await?;
        let current = claimed.versions.get(&event.stream_id).copied().unwrap_or(0);
        Ok(claimed.applied.contains(&event.event_id) || event.stream_version <= current)
    }

    /// The decision the failure policy makes for a message that failed `attempts` times
    /// (poison: at once), when it is given up on.
    fn give_up(&self) -> Option<FailurePolicy> {
        match self.options.policy {
            FailurePolicy::Halt => None,
            other => Some(other),
        }
    }

    /// Whether `bus`'s message is the first its subject still holds in JetStream (the
    /// ones before it expired), so a stream the consumer has never seen may start there.
    async fn first_retained(&self, connection: &Connection, stored: &StoredMessage) -> bool {
        match connection
            .stream
            .get_first_raw_message_by_subject(&stored.subject, 1)
            .await
        {
            Ok(first) => first.sequence == stored.sequence,
            Err(e) => {
                debug!(error = %e, subject = %stored.subject, "cannot look up the subject's first message; waiting");
                false
            }
        }
    }

    /// Handles `items` in one transaction.
    pub(crate) async fn process(
        &self,
        sql: &InboxSql,
        checkpoints: &PgCheckpoints,
        connection: &Connection,
        items: &[Item<'_>],
    ) -> Result<Vec<Decision>, Abort> {
        let mut decisions = vec![Decision::Done; items.len()];
        let mut tx = checkpoints.begin_untracked().await?;
        let mut streams: Vec<String> = items
            .iter()
            .filter_map(|i| i.event.as_ref().ok())
            .map(|b| b.event.stream_id.clone())
            .collect();
        streams.sort();
        streams.dedup();
        let ids: Vec<Uuid> = items
            .iter()
            .filter_map(|i| i.event.as_ref().ok())
            .map(|b| b.event.event_id)
            .collect();
        let claimed = sql
            .claim(&mut tx, &self.name, &streams, &ids)
            .await
            .map_err(store_error)?;

        // Each stream's messages in version order; poison ones on their own.
        let mut by_stream: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            match item.event {
                Ok(bus) => by_stream.entry(&bus.event.stream_id).or_default().push(i),
                Err(e) => {
                    decisions[i] = self
                        .poison(&mut tx, checkpoints, item, e.to_string())
                        .await?;
                }
            }
        }
        let mut versions: HashMap<String, u64> = HashMap::new();
        let mut envelopes: Vec<Envelope<P::Event>> = Vec::new();
        let mut applied: Vec<(Uuid, String, u64)> = Vec::new();
        for (stream, mut indices) in by_stream {
            indices.sort_by_key(|i| match items[*i].event {
                Ok(bus) => bus.event.stream_version,
                Err(_) => 0,
            });
            let mut current = claimed.versions.get(stream).copied().unwrap_or(0);
            let mut parked =
                self.options.policy == FailurePolicy::Park && claimed.parked.contains(stream);
            let mut halted = false;
            for i in indices {
                let Ok(bus) = items[i].event else { continue };
                let event = &bus.event;
                if claimed.applied.contains(&event.event_id) || event.stream_version <= current {
                    metrics::counter!("annals_inbox_duplicates_total", "subscription" => self.name.clone())
                        .increment(1);
                    decisions[i] = Decision::Done;
                    continue;
                }
                let next = !halted
                    && (bus.previous_version == current
                        || (current == 0
                            && self.first_retained(connection, items[i].stored).await));
                if !next {
                    decisions[i] = Decision::Early;
                    continue;
                }
                if parked {
                    let letter = letter_for(
                        &self.name,
                        &items[i],
                        format!("parked behind an earlier dead letter of {stream}"),
                        0,
                    );
                    checkpoints.record_dead_letter(&mut tx, &letter).await?;
                    decisions[i] = Decision::Lettered;
                    current = event.stream_version;
                    continue;
                }
                if !self.handles(&event.event_type) {
                    decisions[i] = Decision::Done;
                    current = event.stream_version;
                    continue;
                }
                match decode_event::<P::Event>(event, &self.upcasters) {
                    Ok(envelope) => {
                        envelopes.push(envelope);
                        applied.push((
                            event.event_id,
                            event.stream_id.clone(),
                            event.stream_version,
                        ));
                        decisions[i] = Decision::Done;
                        current = event.stream_version;
                    }
                    // A payload that does not decode is poison.
                    Err(e) => {
                        decisions[i] = self
                            .poison(&mut tx, checkpoints, &items[i], e.to_string())
                            .await?;
                        if decisions[i] == Decision::Lettered {
                            current = event.stream_version;
                            parked = self.options.policy == FailurePolicy::Park;
                        } else {
                            halted = true;
                        }
                    }
                }
            }
            if claimed.versions.get(stream).copied().unwrap_or(0) != current {
                versions.insert(stream.to_owned(), current);
            }
        }
        if !envelopes.is_empty() {
            // The handler continues the trace the relay's publish carried: as the parent
            // for one message, as links for several.
            let span = tracing::info_span!("annals.inbox.handle", consumer = %self.name, events = envelopes.len());
            match envelopes.as_slice() {
                [one] => annals_core::trace::follow(&span, &one.metadata, Follow::Parent),
                many => {
                    for e in many.iter().take(32) {
                        annals_core::trace::follow(&span, &e.metadata, Follow::Link);
                    }
                }
            }
            let handled = self
                .projection
                .handle_batch(&envelopes, &mut tx)
                .instrument(span)
                .await;
            if let Err(e) = handled {
                return Err(Abort::Handler(e));
            }
        }
        sql.record(&mut tx, &self.name, &applied, &versions)
            .await
            .map_err(store_error)?;
        checkpoints.commit_untracked(tx).await?;
        Ok(decisions)
    }

    /// A message that can never be handled: the policy applies at once (a dead letter,
    /// which moves its stream on, or a halt).
    async fn poison(
        &self,
        tx: &mut PgTx,
        checkpoints: &PgCheckpoints,
        item: &Item<'_>,
        error: String,
    ) -> Result<Decision, Abort> {
        warn!(consumer = %self.name, subject = %item.stored.subject, sequence = item.stored.sequence, %error, "poison message");
        if self.give_up().is_none() {
            return Ok(Decision::Halt(error));
        }
        let attempts = u32::try_from(item.delivered).unwrap_or(u32::MAX);
        let letter = letter_for(&self.name, item, error, attempts);
        checkpoints.record_dead_letter(tx, &letter).await?;
        Ok(Decision::Lettered)
    }

    /// After the handler failed on `item` alone: retry it later, or give up per the policy
    /// (a dead letter that moves its stream on, in its own transaction).
    pub(crate) async fn failed(
        &self,
        sql: &InboxSql,
        checkpoints: &PgCheckpoints,
        item: &Item<'_>,
        error: HandlerError,
    ) -> Result<Decision, Abort> {
        let attempts = u32::try_from(item.delivered).unwrap_or(u32::MAX);
        if attempts < self.options.retry.attempts {
            debug!(consumer = %self.name, subject = %item.stored.subject, attempts, %error, "handler failed; redelivering");
            return Ok(Decision::Retry(
                self.options.retry.delay_with_jitter(attempts),
            ));
        }
        warn!(consumer = %self.name, subject = %item.stored.subject, attempts, %error, "giving up on a message");
        if self.give_up().is_none() {
            return Ok(Decision::Halt(error.to_string()));
        }
        let Ok(bus) = item.event else {
            return Ok(Decision::Halt(error.to_string()));
        };
        let event = &bus.event;
        let mut tx = checkpoints.begin_untracked().await?;
        if self
            .claim_one(sql, &mut tx, event)
            .await
            .map_err(store_error)?
        {
            // Another process applied it meanwhile.
            return Ok(Decision::Done);
        }
        let letter = letter_for(&self.name, item, error.to_string(), attempts);
        checkpoints.record_dead_letter(&mut tx, &letter).await?;
        let versions = HashMap::from([(event.stream_id.clone(), event.stream_version)]);
        sql.record(&mut tx, &self.name, &[], &versions)
            .await
            .map_err(store_error)?;
        checkpoints.commit_untracked(tx).await?;
        Ok(Decision::Lettered)
    }

    /// Applies a dead letter's stored message again, removing the letter in the same
    /// transaction (out of stream order: an operator's decision).
    pub(crate) async fn apply_letter(
        &self,
        checkpoints: &PgCheckpoints,
        letter: &DeadLetter,
    ) -> annals_projections::Result<()> {
        let handler_error = |source: HandlerError| EngineError::Handler {
            projection: self.name.clone(),
            source,
        };
        let stored = letter
            .message
            .as_deref()
            .ok_or_else(|| handler_error("the dead letter keeps no message to apply again".into()))
            .and_then(|bytes| {
                StoredMessage::from_bytes(bytes).map_err(|e| handler_error(e.into()))
            })?;
        let bus = stored.decode().map_err(|e| handler_error(e.into()))?;
        let event = &bus.event;
        let envelope = decode_event::<P::Event>(event, &self.upcasters)
            .map_err(|e| handler_error(e.into()))?;
        let sql = InboxSql::new(checkpoints);
        let backend = |e: sqlx::Error| EngineError::Store(annals_core::Error::backend(e));
        let mut tx = checkpoints.begin_untracked().await?;
        // Applied before (its stream passed it) only when it is in the inbox: a dead
        // letter's stream always went on past it.
        let applied = sql
            .claim(
                &mut tx,
                &self.name,
                std::slice::from_ref(&event.stream_id),
                &[event.event_id],
            )
            .await
            .map_err(backend)?
            .applied
            .contains(&event.event_id);
        if !checkpoints.remove_dead_letter(&mut tx, letter.id).await? {
            return Err(EngineError::DeadLetterNotFound(letter.id));
        }
        if !applied && self.handles(&event.event_type) {
            self.projection
                .handle_batch(std::slice::from_ref(&envelope), &mut tx)
                .await
                .map_err(handler_error)?;
            let applied = [(
                event.event_id,
                event.stream_id.clone(),
                event.stream_version,
            )];
            let versions = HashMap::from([(event.stream_id.clone(), event.stream_version)]);
            sql.record(&mut tx, &self.name, &applied, &versions)
                .await
                .map_err(backend)?;
        }
        checkpoints.commit_untracked(tx).await
    }

    /// Applies the letters of `stream_id`, oldest version first, until none is left or one
    /// fails (it stays, with its new error, as its stream's head letter).
    pub(crate) async fn release(
        &self,
        checkpoints: &PgCheckpoints,
        stream_id: String,
    ) -> annals_projections::Result<()> {
        loop {
            let next = checkpoints
                .dead_letters(Some(&self.name))
                .await?
                .into_iter()
                .filter(|d| d.stream_id == stream_id)
                .min_by_key(|d| d.stream_version);
            let Some(next) = next else { return Ok(()) };
            if let Err(error) = self.apply_letter(checkpoints, &next).await {
                let head = DeadLetter {
                    error: error.report(),
                    attempts: next.attempts + 1,
                    failed_at: chrono::Utc::now(),
                    ..next
                };
                let mut tx = checkpoints.begin_untracked().await?;
                checkpoints.record_dead_letter(&mut tx, &head).await?;
                checkpoints.commit_untracked(tx).await?;
                return Err(error);
            }
        }
    }
}
