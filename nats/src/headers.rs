//! The envelope of an event as NATS message headers, and back.
//!
//! A relay's message carries the stored payload as its body and the whole envelope in
//! headers, so that a consumer in any language can read it:
//!
//! | header | value |
//! |---|---|
//! | `Nats-Msg-Id` | the event id (JetStream deduplicates by it) |
//! | `ce-specversion` | `1.0` (CloudEvents NATS protocol binding) |
//! | `ce-id` | the event id |
//! | `ce-source` | the relay's source URI (default `annals://<relay name>`) |
//! | `ce-type` | the event type |
//! | `ce-time` | when it was recorded (RFC 3339) |
//! | `ce-subject` | the stream id |
//! | `ce-datacontenttype` | `application/json`, or `application/x-postcard` |
//! | `ce-dataschema` | the payload's schema reference, when the relay has one |
//! | `annals-stream-id`, `annals-stream-version` | the stream and the event's version in it |
//! | `annals-schema-version` | the payload's schema version |
//! | `annals-position` | the position in the global log, `<commit>/<sequence>` |
//! | `annals-encoding` | `json` or `postcard` |
//! | `annals-correlation-id`, `annals-causation-id`, `annals-actor` | metadata, when set |
//! | `annals-metadata-extra` | the free-form metadata fields, as JSON, when set |
//! | `traceparent`, `tracestate` | W3C trace context, when set |
//! | `annals-previous-version` | the stream version of the previous message on the subject (0: none) |
//! | `annals-relay` | the relay's name |
//! | `annals-batch-end` | the last position of the relay batch the message was published in |
//!
//! Text values that could hold line breaks or control characters (stream ids, actor, the
//! source) are percent-encoded: `%`, and bytes below 0x20 or 0x7f, become `%XX`.

use annals_core::{Encoding, Metadata, Position, RecordedEvent};
use async_nats::{header::NATS_MESSAGE_ID, HeaderMap, HeaderValue};
use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use crate::{Error, Result};

/// `ce-specversion`.
pub const CE_SPECVERSION: &str = "ce-specversion";
/// `ce-id`.
pub const CE_ID: &str = "ce-id";
/// `ce-source`.
pub const CE_SOURCE: &str = "ce-source";
/// `ce-type`.
pub const CE_TYPE: &str = "ce-type";
/// `ce-time`.
pub const CE_TIME: &str = "ce-time";
/// `ce-subject`.
pub const CE_SUBJECT: &str = "ce-subject";
/// `ce-datacontenttype`.
pub const CE_DATACONTENTTYPE: &str = "ce-datacontenttype";
/// `ce-dataschema`.
pub const CE_DATASCHEMA: &str = "ce-dataschema";
/// The stream id.
pub const STREAM_ID: &str = "annals-stream-id";
/// The event's version in its stream.
pub const STREAM_VERSION: &str = "annals-stream-version";
/// The payload's schema version.
pub const SCHEMA_VERSION: &str = "annals-schema-version";
/// The position in the global log.
pub const POSITION: &str = "annals-position";
/// The payload's encoding.
pub const ENCODING: &str = "annals-encoding";
/// Metadata: correlation id.
pub const CORRELATION_ID: &str = "annals-correlation-id";
/// Metadata: causation id.
pub const CAUSATION_ID: &str = "annals-causation-id";
/// Metadata: actor.
pub const ACTOR: &str = "annals-actor";
/// Metadata: free-form fields (JSON).
pub const METADATA_EXTRA: &str = "annals-metadata-extra";
/// W3C `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// W3C `tracestate`.
pub const TRACESTATE: &str = "tracestate";
/// The stream version of the previous message on the same subject.
pub const PREVIOUS_VERSION: &str = "annals-previous-version";
/// The relay that published it.
pub const RELAY: &str = "annals-relay";
/// The last position of the batch it was published in.
pub const BATCH_END: &str = "annals-batch-end";

/// Percent-encodes `%`, control characters and DEL, so the value fits in a header.
pub(crate) fn encode_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '%' || c.is_ascii_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Reverses [`encode_value`].
pub(crate) fn decode_value(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(s.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn content_type(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Json => "application/json",
        _ => "application/x-postcard",
    }
}

fn put(headers: &mut HeaderMap, name: &'static str, value: &str) -> Result<(), String> {
    let value: HeaderValue = value
        .parse()
        .map_err(|e| format!("header {name} cannot hold its value: {e}"))?;
    headers.insert(name, value);
    Ok(())
}

/// What a relay adds to an event's own envelope.
#[derive(Clone, Copy, Debug)]
pub struct Published<'a> {
    /// The relay's name.
    pub relay: &'a str,
    /// The CloudEvents source.
    pub source: &'a str,
    /// The stream version of the previous message on the subject (0: none).
    pub previous_version: u64,
    /// The last position of the batch the message is published in.
    pub batch_end: Position,
    /// The payload's schema reference, if known.
    pub dataschema: Option<&'a str>,
    /// The publish span's W3C trace context (`traceparent`, `tracestate`), carried in the
    /// headers instead of the appending span's (feature `otel` of annals-core).
    pub trace: Option<&'a (String, Option<String>)>,
}

/// The headers of `event`'s message, as the relay publishes them.
///
/// # Errors
///
/// Why a header cannot hold a value (never for what the relay's encoding produces).
pub fn to_headers(event: &RecordedEvent, published: &Published<'_>) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::new();
    let id = event.event_id.to_string();
    put(&mut h, NATS_MESSAGE_ID.as_ref(), &id)?;
    put(&mut h, CE_SPECVERSION, "1.0")?;
    put(&mut h, CE_ID, &id)?;
    put(&mut h, CE_SOURCE, &encode_value(published.source))?;
    put(&mut h, CE_TYPE, &encode_value(&event.event_type))?;
    put(
        &mut h,
        CE_TIME,
        &event
            .recorded_at
            .to_rfc3339_opts(SecondsFormat::Micros, true),
    )?;
    let stream = encode_value(&event.stream_id);
    put(&mut h, CE_SUBJECT, &stream)?;
    put(&mut h, CE_DATACONTENTTYPE, content_type(event.encoding))?;
    if let Some(schema) = published.dataschema {
        put(&mut h, CE_DATASCHEMA, &encode_value(schema))?;
    }
    put(&mut h, STREAM_ID, &stream)?;
    put(&mut h, STREAM_VERSION, &event.stream_version.to_string())?;
    put(&mut h, SCHEMA_VERSION, &event.schema_version.to_string())?;
    put(&mut h, POSITION, &event.position.to_string())?;
    put(&mut h, ENCODING, event.encoding.name())?;
    let m = &event.metadata;
    if let Some(id) = m.correlation_id {
        put(&mut h, CORRELATION_ID, &id.to_string())?;
    }
    if let Some(id) = m.causation_id {
        put(&mut h, CAUSATION_ID, &id.to_string())?;
    }
    if let Some(actor) = &m.actor {
        put(&mut h, ACTOR, &encode_value(actor))?;
    }
    // The publish's own context when it has one (the consumer continues from the
    // publish), the appending span's otherwise.
    let (traceparent, tracestate) = match published.trace {
        Some((tp, ts)) => (Some(tp), ts.as_ref()),
        None => (m.traceparent.as_ref(), m.tracestate.as_ref()),
    };
    if let Some(tp) = traceparent {
        put(&mut h, TRACEPARENT, &encode_value(tp))?;
    }
    if let Some(ts) = tracestate {
        put(&mut h, TRACESTATE, &encode_value(ts))?;
    }
    if !m.extra.is_empty() {
        let extra = serde_json::to_string(&m.extra).map_err(|e| e.to_string())?;
        put(&mut h, METADATA_EXTRA, &encode_value(&extra))?;
    }
    put(
        &mut h,
        PREVIOUS_VERSION,
        &published.previous_version.to_string(),
    )?;
    put(&mut h, RELAY, &encode_value(published.relay))?;
    put(&mut h, BATCH_END, &published.batch_end.to_string())?;
    Ok(h)
}

/// Parses `<commit>/<sequence>`.
pub(crate) fn parse_position(s: &str) -> Option<Position> {
    let (commit, sequence) = s.split_once('/')?;
    Some(Position::new(commit.parse().ok()?, sequence.parse().ok()?))
}

/// A message decoded back into the event the relay published: what a consumer hands to
/// the same decoding (and upcasting) a projection uses.
#[derive(Clone, Debug, PartialEq)]
pub struct BusEvent {
    /// The event, as the store held it.
    pub event: RecordedEvent,
    /// The stream version of the previous message on its subject (0: none), for checking
    /// order where the relay filters by event type.
    pub previous_version: u64,
}

/// Reads an annals event out of a message's headers and body.
///
/// # Errors
///
/// [`Error::NotAnEvent`] naming the header that is missing or malformed.
pub fn from_message(
    subject: &str,
    sequence: u64,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<BusEvent> {
    let fail = |problem: String| Error::NotAnEvent {
        subject: subject.to_owned(),
        sequence,
        problem,
    };
    let headers = headers.ok_or_else(|| fail("it has no headers".to_owned()))?;
    let get = |name: &str| -> Result<String> {
        let raw = headers
            .get(name)
            .ok_or_else(|| fail(format!("header {name} is missing")))?;
        decode_value(raw.as_str()).ok_or_else(|| fail(format!("header {name} is malformed")))
    };
    let optional = |name: &str| -> Result<Option<String>> {
        match headers.get(name) {
            None => Ok(None),
            Some(raw) => decode_value(raw.as_str())
                .map(Some)
                .ok_or_else(|| fail(format!("header {name} is malformed"))),
        }
    };
    let number = |name: &str| -> Result<u64> {
        get(name)?
            .parse()
            .map_err(|_| fail(format!("header {name} is not a number")))
    };
    let uuid = |name: &str, value: String| -> Result<Uuid> {
        value
            .parse()
            .map_err(|_| fail(format!("header {name} is not a UUID")))
    };
    let encoding_name = get(ENCODING)?;
    let encoding = Encoding::from_name(&encoding_name)
        .ok_or_else(|| fail(format!("unknown encoding `{encoding_name}`")))?;
    let recorded_at: DateTime<Utc> = DateTime::parse_from_rfc3339(&get(CE_TIME)?)
        .map_err(|_| fail(format!("header {CE_TIME} is not RFC 3339")))?
        .with_timezone(&Utc);
    let extra = match optional(METADATA_EXTRA)? {
        Some(json) => serde_json::from_str(&json)
            .map_err(|_| fail(format!("header {METADATA_EXTRA} is not a JSON object")))?,
        None => Default::default(),
    };
    let metadata = Metadata {
        correlation_id: optional(CORRELATION_ID)?
            .map(|v| uuid(CORRELATION_ID, v))
            .transpose()?,
        causation_id: optional(CAUSATION_ID)?
            .map(|v| uuid(CAUSATION_ID, v))
            .transpose()?,
        traceparent: optional(TRACEPARENT)?,
        tracestate: optional(TRACESTATE)?,
        actor: optional(ACTOR)?,
        extra,
    };
    let event = RecordedEvent {
        event_id: uuid(CE_ID, get(CE_ID)?)?,
        stream_id: get(STREAM_ID)?,
        stream_version: number(STREAM_VERSION)?,
        position: parse_position(&get(POSITION)?)
            .ok_or_else(|| fail(format!("header {POSITION} is malformed")))?,
        event_type: get(CE_TYPE)?,
        schema_version: u32::try_from(number(SCHEMA_VERSION)?)
            .map_err(|_| fail(format!("header {SCHEMA_VERSION} is out of range")))?,
        recorded_at,
        metadata,
        encoding,
        payload: payload.to_vec(),
    };
    let previous_version = match headers.get(PREVIOUS_VERSION) {
        Some(v) => v
            .as_str()
            .parse()
            .map_err(|_| fail(format!("header {PREVIOUS_VERSION} is not a number")))?,
        None => event.stream_version.saturating_sub(1),
    };
    Ok(BusEvent {
        event,
        previous_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> RecordedEvent {
        let mut extra = std::collections::BTreeMap::new();
        extra.insert("tenant".to_owned(), serde_json::json!("acme\nline"));
        RecordedEvent {
            event_id: Uuid::now_v7(),
            stream_id: "account-ünï\r\n%41".to_owned(),
            stream_version: 7,
            position: Position::new(900, 42),
            event_type: "money-deposited".to_owned(),
            schema_version: 2,
            recorded_at: Utc::now(),
            metadata: Metadata {
                correlation_id: Some(Uuid::now_v7()),
                causation_id: Some(Uuid::now_v7()),
                traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
                tracestate: Some("vendor=abc".into()),
                actor: Some("ada\t(admin)".to_owned()),
                extra,
            },
            encoding: Encoding::Json,
            payload: br#"{"amount":5}"#.to_vec(),
        }
    }

    #[test]
    fn the_envelope_survives_the_headers() {
        let e = event();
        let published = Published {
            relay: "relay",
            source: "annals://relay",
            previous_version: 6,
            batch_end: Position::new(901, 50),
            dataschema: Some("https://schemas.example/money-deposited/2"),
            trace: None,
        };
        let headers = to_headers(&e, &published).expect("headers");
        let back = from_message("s", 1, Some(&headers), &e.payload).expect("decode");
        assert_eq!(back.previous_version, 6);
        let mut expected = e.clone();
        // ce-time carries microseconds.
        expected.recorded_at = back.event.recorded_at;
        assert_eq!(back.event, expected);
        assert!(
            (back.event.recorded_at - e.recorded_at)
                .num_microseconds()
                .unwrap_or(9)
                < 1
        );
    }

    #[test]
    fn a_message_without_the_envelope_is_a_typed_error() {
        let e = event();
        let headers = to_headers(
            &e,
            &Published {
                relay: "r",
                source: "s",
                previous_version: 0,
                batch_end: Position::START,
                dataschema: None,
                trace: None,
            },
        )
        .expect("headers");
        assert!(matches!(
            from_message("s", 1, None, b"{}"),
            Err(Error::NotAnEvent { .. })
        ));
        for missing in [
            STREAM_ID,
            STREAM_VERSION,
            POSITION,
            CE_ID,
            CE_TYPE,
            ENCODING,
            CE_TIME,
        ] {
            let mut h = HeaderMap::new();
            for (name, values) in headers.iter() {
                if AsRef::<str>::as_ref(name) != missing {
                    for v in values {
                        h.append(name.clone(), v.clone());
                    }
                }
            }
            let err = from_message("s", 1, Some(&h), b"{}").expect_err(missing);
            assert!(err.to_string().contains(missing), "{err}");
        }
    }
}
