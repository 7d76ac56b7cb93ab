//! Event and snapshot encodings.

use std::borrow::Cow;

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use crate::{DomainEvent, Envelope, Error, NewEvent, RecordedEvent, Result, Upcasters};

mod variants;

/// How a payload is encoded. Stored with each event, so changing the default later keeps
/// old events readable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encoding {
    /// JSON: the default for events (queryable `jsonb` in Postgres).
    #[default]
    Json,
    /// postcard: compact binary, the default for snapshots. For events it ties stored data
    /// to the order of the enum's variants; prefer JSON unless size matters most.
    Postcard,
}

impl Encoding {
    /// The stored name: `"json"` or `"postcard"`.
    pub const fn name(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Postcard => "postcard",
        }
    }

    /// Parses a stored name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "json" => Some(Encoding::Json),
            "postcard" => Some(Encoding::Postcard),
            _ => None,
        }
    }

    /// Encodes any serializable value.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when serde refuses the value.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>> {
        let encoded = match self {
            Encoding::Json => serde_json::to_vec(value).map_err(Into::into),
            Encoding::Postcard => postcard::to_stdvec(value).map_err(Into::into),
        };
        encoded.map_err(|source| Error::Encode {
            what: std::any::type_name::<T>().to_owned(),
            source,
        })
    }

    /// Decodes a value; the error is the codec's own, for the caller to put in context.
    ///
    /// # Errors
    ///
    /// The codec's error when `bytes` is not a valid encoding of `T`.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, crate::BoxError> {
        match self {
            Encoding::Json => serde_json::from_slice(bytes).map_err(Into::into),
            Encoding::Postcard => postcard::from_bytes(bytes).map_err(Into::into),
        }
    }

    /// Checks that `bytes` is well-formed for this encoding (stores call this so a bad
    /// payload is refused at append time, on every backend alike).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when a JSON payload is not JSON.
    pub fn validate(self, bytes: &[u8]) -> Result<()> {
        match self {
            Encoding::Json => serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
                .map(drop)
                .map_err(|e| Error::InvalidInput(format!("payload is not valid JSON: {e}"))),
            Encoding::Postcard => Ok(()),
        }
    }
}

/// The persisted event type name of `event`: its serde variant name.
///
/// # Errors
///
/// [`Error::Encode`] when the event does not serialize as an externally tagged enum.
pub fn event_type_of<E: DomainEvent>(event: &E) -> Result<String> {
    split_tag::<E>(to_json_value(event)?).map(|(event_type, _)| event_type)
}

/// Every persisted event type name `E` can decode (its serde variant names), or `None`
/// when `E` is not an externally tagged enum. Projections use it to filter the log.
pub fn event_types_of<E: DomainEvent>() -> Option<&'static [&'static str]> {
    variants::names::<E>()
}

/// Encodes a domain event into a [`NewEvent`] ready to append.
///
/// With [`Encoding::Json`] the payload is the variant's content alone (the name goes in
/// `event_type`), so `{"amount": 5}` rather than `{"deposited": {"amount": 5}}`.
///
/// # Errors
///
/// [`Error::Encode`] when serde refuses the event or it is not an externally tagged enum.
///
/// # Example
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Serialize, Deserialize)]
/// # enum Ev { #[serde(rename = "deposited")] Deposited { amount: u64 } }
/// # impl annals_core::DomainEvent for Ev {}
/// let event = annals_core::encode_event(&Ev::Deposited { amount: 5 }, annals_core::Encoding::Json)?;
/// assert_eq!(event.event_type, "deposited");
/// assert_eq!(event.payload, br#"{"amount":5}"#);
/// # Ok::<(), annals_core::Error>(())
/// ```
pub fn encode_event<E: DomainEvent>(event: &E, encoding: Encoding) -> Result<NewEvent> {
    let (event_type, content) = split_tag::<E>(to_json_value(event)?)?;
    let payload = match encoding {
        Encoding::Json => Encoding::Json.encode(&content)?,
        other => other.encode(event)?,
    };
    Ok(NewEvent::new(
        event_type,
        event.schema_version(),
        encoding,
        payload,
    ))
}

/// Decodes a stored event: runs the upcasters, then the codec.
///
/// # Errors
///
/// [`Error::UnknownEventType`] when `E` has no variant named `event_type`,
/// [`Error::Upcast`] when an upcaster fails, [`Error::Decode`] when the payload does not
/// decode. All of them name the stream, version and event type.
pub fn decode_event<E: DomainEvent>(
    event: &RecordedEvent,
    upcasters: &Upcasters,
) -> Result<Envelope<E>> {
    let event = upcasters.upcast(Cow::Borrowed(event))?;
    let payload = decode_payload::<E>(&event)?;
    Ok(Envelope {
        event_id: event.event_id,
        stream_id: event.stream_id.clone(),
        stream_version: event.stream_version,
        position: event.position,
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        recorded_at: event.recorded_at,
        metadata: event.metadata.clone(),
        payload,
    })
}

/// Decodes only the event itself (upcast first): what folding an aggregate needs, without
/// copying the envelope.
pub(crate) fn decode_value<E: DomainEvent>(
    event: &RecordedEvent,
    upcasters: &Upcasters,
) -> Result<E> {
    if upcasters.is_empty() {
        return decode_payload(event);
    }
    let event = upcasters.upcast(Cow::Borrowed(event))?;
    decode_payload(&event)
}

/// Decodes an already upcast event's payload.
fn decode_payload<E: DomainEvent>(event: &RecordedEvent) -> Result<E> {
    let known = || variants::names::<E>().is_none_or(|k| k.contains(&event.event_type.as_str()));
    let decoded = match event.encoding {
        Encoding::Json => {
            let tag = serde_json::to_string(&event.event_type).map_err(crate::BoxError::from);
            tag.and_then(|tag| {
                let mut wrapped = Vec::with_capacity(event.payload.len() + tag.len() + 2);
                wrapped.push(b'{');
                wrapped.extend_from_slice(tag.as_bytes());
                wrapped.push(b':');
                wrapped.extend_from_slice(&event.payload);
                wrapped.push(b'}');
                Encoding::Json.decode::<E>(&wrapped)
            })
        }
        // A binary payload does not carry its type name: check it first.
        other if known() => other.decode::<E>(&event.payload),
        _ => return Err(unknown(event)),
    };
    decoded.map_err(|source| {
        if !known() {
            return unknown(event);
        }
        Error::Decode {
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            stream_id: event.stream_id.clone(),
            stream_version: event.stream_version,
            source,
        }
    })
}

fn unknown(event: &RecordedEvent) -> Error {
    Error::UnknownEventType {
        event_type: event.event_type.clone(),
        stream_id: event.stream_id.clone(),
        stream_version: event.stream_version,
        position: event.position,
    }
}

fn to_json_value<E: Serialize>(event: &E) -> Result<Value> {
    serde_json::to_value(event).map_err(|e| Error::Encode {
        what: std::any::type_name::<E>().to_owned(),
        source: e.into(),
    })
}

/// Splits an externally tagged enum value into its variant name and content. The name
/// must be one of `E`'s variants: a struct or a newtype whose JSON merely looks tagged is
/// refused rather than given a made-up event type.
fn split_tag<E: DomainEvent>(value: Value) -> Result<(String, Value)> {
    let refuse = || {
        Error::Encode {
        what: std::any::type_name::<E>().to_owned(),
        source: "an event must be an enum serialized externally tagged (no #[serde(tag)], untagged or struct events)".into(),
    }
    };
    let (name, content) = match value {
        Value::String(name) => (name, Value::Null),
        Value::Object(map) if map.len() == 1 => map.into_iter().next().ok_or_else(refuse)?,
        _ => return Err(refuse()),
    };
    match variants::names::<E>() {
        Some(known) if known.contains(&name.as_str()) => Ok((name, content)),
        _ => Err(refuse()),
    }
}

#[cfg(test)]
mod tests;
