use std::{collections::HashSet, fmt, future::Future};

use annals_core::{Position, RecordedEvent};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Checkpoints, Result};

/// An event a subscription gave up on, or one parked behind such an event in its stream.
/// Serializes (for `dead-letters list --json`) without the message bytes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// Identifier for retry / discard (assigned by the store; 0 before it is recorded).
    pub id: i64,
    /// The subscription that failed.
    pub projection: String,
    /// The event.
    pub event_id: Uuid,
    /// Its position in the global log.
    pub position: Position,
    /// Its stream.
    pub stream_id: String,
    /// Its version in the stream.
    pub stream_version: u64,
    /// Its type.
    pub event_type: String,
    /// The handler's last error, or which letter it is parked behind.
    pub error: String,
    /// How many times the handler was tried (0 for a parked event).
    pub attempts: u32,
    /// When it was given up on.
    pub failed_at: DateTime<Utc>,
    /// The whole message, for subscriptions that read a bus rather than the log (an inbox
    /// consumer keeps subject, headers and payload here, so a retry works after the bus
    /// has dropped the message); `None` for events the log still holds. Opaque to the
    /// engine: the subscription that recorded it decodes it.
    #[serde(skip)]
    pub message: Option<Vec<u8>>,
    /// Whether the later events of its stream are parked behind it, whatever the
    /// subscription's failure policy (set by `skip --park-stream`, and on the letters of a
    /// subscription whose policy is [`FailurePolicy::Park`](crate::FailurePolicy::Park)).
    pub parks_stream: bool,
}

impl DeadLetter {
    /// A letter for `event`, not yet recorded.
    pub fn new(projection: &str, event: &RecordedEvent, error: String, attempts: u32) -> Self {
        Self {
            id: 0,
            projection: projection.to_owned(),
            event_id: event.event_id,
            position: event.position,
            stream_id: event.stream_id.clone(),
            stream_version: event.stream_version,
            event_type: event.event_type.clone(),
            error,
            attempts,
            failed_at: Utc::now(),
            message: None,
            parks_stream: false,
        }
    }

    /// Whether the later events of its stream wait behind it, for a subscription whose
    /// failure policy is `policy` (every letter parks under `Park`).
    pub fn parks_under(&self, policy: crate::FailurePolicy) -> bool {
        policy == crate::FailurePolicy::Park || self.parks_stream
    }

    /// The same letter, parking the later events of its stream behind it (see
    /// [`DeadLetter::parks_stream`]).
    #[must_use]
    pub fn parking(mut self, parks: bool) -> Self {
        self.parks_stream = parks;
        self
    }

    /// The same letter, keeping `message` (see [`DeadLetter::message`]).
    #[must_use]
    pub fn with_message(mut self, message: Vec<u8>) -> Self {
        self.message = Some(message);
        self
    }
}

impl fmt::Display for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {} {}@{} ({}) at {}: {} [{} attempts]",
            self.id,
            self.projection,
            self.stream_id,
            self.stream_version,
            self.event_type,
            self.position,
            self.error,
            self.attempts
        )
    }
}

/// Dead letters: events a subscription gave up on (per its failure policy), to list, retry
/// or discard, recorded in the same transaction that moves the checkpoint past them.
pub trait DeadLetters: Checkpoints {
    /// Records a dead letter inside `tx` (or updates the subscription's letter for the same
    /// event); returns its id.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn record_dead_letter(
        &self,
        tx: &mut Self::Tx,
        letter: &DeadLetter,
    ) -> impl Future<Output = Result<i64>> + Send;

    /// Dead letters, oldest first, of one subscription or all.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn dead_letters(
        &self,
        name: Option<&str>,
    ) -> impl Future<Output = Result<Vec<DeadLetter>>> + Send;

    /// One dead letter.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn dead_letter(&self, id: i64) -> impl Future<Output = Result<Option<DeadLetter>>> + Send {
        async move {
            Ok(self
                .dead_letters(None)
                .await?
                .into_iter()
                .find(|d| d.id == id))
        }
    }

    /// Deletes a dead letter inside `tx`; returns whether it existed.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn remove_dead_letter(
        &self,
        tx: &mut Self::Tx,
        id: i64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Of `streams`, those holding a dead letter of subscription `name` that parks its
    /// stream ([`DeadLetter::parks_stream`]; with `every_letter`, any of its letters), as
    /// seen inside `tx` (a batch transaction holds the checkpoint's lock, so a concurrent
    /// retry cannot change the answer before it commits).
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn streams_with_dead_letters(
        &self,
        tx: &mut Self::Tx,
        name: &str,
        streams: &[String],
        every_letter: bool,
    ) -> impl Future<Output = Result<HashSet<String>>> + Send;
}
