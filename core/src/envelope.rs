use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Encoding, Position};

/// Context carried with every event, so a trace or a causal chain continues across the
/// async hop from a command to the projections that react to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Groups every event caused, directly or not, by one original request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The event or command that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// W3C trace context (`traceparent` header value) of the span that appended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// W3C `tracestate` that goes with [`traceparent`](Metadata::traceparent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    /// Who asked for it (a user id, a service name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Free-form application fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Metadata {
    /// Metadata for an event caused by `cause`: same correlation id (or the cause's own
    /// event id when it has none), causation id = the cause's event id, same actor.
    pub fn caused_by(cause: &RecordedEvent) -> Self {
        Self {
            correlation_id: cause.metadata.correlation_id.or(Some(cause.event_id)),
            causation_id: Some(cause.event_id),
            traceparent: cause.metadata.traceparent.clone(),
            tracestate: cause.metadata.tracestate.clone(),
            actor: cause.metadata.actor.clone(),
            extra: BTreeMap::new(),
        }
    }

    /// True when no field is set (stores may keep such metadata as `NULL`).
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// An event ready to append: already encoded, not yet positioned.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// Unique id (UUID v7, so ids sort roughly by creation time).
    pub event_id: Uuid,
    /// Persisted event type name.
    pub event_type: String,
    /// Schema version of `payload`.
    pub schema_version: u32,
    /// Correlation, causation, trace context and free-form fields.
    pub metadata: Metadata,
    /// How `payload` is encoded.
    pub encoding: Encoding,
    /// The encoded event.
    pub payload: Vec<u8>,
}

impl NewEvent {
    /// Wraps an already encoded payload, with a fresh UUID v7 id and empty metadata.
    pub fn new(
        event_type: impl Into<String>,
        schema_version: u32,
        encoding: Encoding,
        payload: Vec<u8>,
    ) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version,
            metadata: Metadata::default(),
            encoding,
            payload,
        }
    }

    /// Replaces the metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }
}

/// An event as stored: positioned in its stream and in the global log, payload still
/// encoded. Decode it with [`decode_event`](crate::decode_event).
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedEvent {
    /// Unique id given when the event was created.
    pub event_id: Uuid,
    /// The stream it belongs to.
    pub stream_id: String,
    /// 1-based, gapless version within the stream.
    pub stream_version: u64,
    /// Position in the global log.
    pub position: Position,
    /// Persisted event type name.
    pub event_type: String,
    /// Schema version the payload was written with.
    pub schema_version: u32,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
    /// Correlation, causation, trace context and free-form fields.
    pub metadata: Metadata,
    /// How `payload` is encoded.
    pub encoding: Encoding,
    /// The encoded event.
    pub payload: Vec<u8>,
}

impl RecordedEvent {
    /// The event's unique global sequence number (`position.sequence()`).
    pub fn global_position(&self) -> u64 {
        self.position.sequence()
    }
}

/// A decoded event with its envelope: what projections and callers work with.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope<E> {
    /// Unique id given when the event was created.
    pub event_id: Uuid,
    /// The stream it belongs to.
    pub stream_id: String,
    /// 1-based, gapless version within the stream.
    pub stream_version: u64,
    /// Position in the global log.
    pub position: Position,
    /// Persisted event type name.
    pub event_type: String,
    /// Schema version after upcasting.
    pub schema_version: u32,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
    /// Correlation, causation, trace context and free-form fields.
    pub metadata: Metadata,
    /// The decoded event.
    pub payload: E,
}

impl<E> Envelope<E> {
    /// The event's unique global sequence number (`position.sequence()`).
    pub fn global_position(&self) -> u64 {
        self.position.sequence()
    }
}
