use std::{borrow::Cow, collections::HashMap, fmt};

use serde_json::Value;

use crate::{Encoding, Error, RecordedEvent, Result};

type JsonUpcaster = Box<dyn Fn(Value) -> std::result::Result<Value, String> + Send + Sync>;

/// Registered upcasters: each turns one event type's payload at one schema version into
/// the next version's shape. Decoding runs them in a chain (v1 → v2 → v3 ...) until no
/// upcaster matches, then decodes.
///
/// Upcasters work on the JSON representation, so they apply to events stored with
/// [`Encoding::Json`]; an event stored with another encoding that needs upcasting is an
/// [`Error::Upcast`].
///
/// # Example
///
/// ```
/// use annals_core::Upcasters;
///
/// // v1 "deposited" had `cents`; v2 has `amount`.
/// let upcasters = Upcasters::new().json("deposited", 1, |mut v| {
///     let cents = v["cents"].take();
///     Ok(serde_json::json!({ "amount": cents }))
/// });
/// assert!(!upcasters.is_empty());
/// ```
#[derive(Default)]
pub struct Upcasters {
    json: HashMap<String, HashMap<u32, JsonUpcaster>>,
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for (event_type, versions) in &self.json {
            for version in versions.keys() {
                list.entry(&format_args!("{event_type} v{version}"));
            }
        }
        list.finish()
    }
}

impl Upcasters {
    /// No upcasters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `upcast` for `event_type` payloads at `from_version`; its output is
    /// version `from_version + 1`. Return `Err(message)` for a payload it cannot convert.
    #[must_use]
    pub fn json<F>(mut self, event_type: &str, from_version: u32, upcast: F) -> Self
    where
        F: Fn(Value) -> std::result::Result<Value, String> + Send + Sync + 'static,
    {
        self.json
            .entry(event_type.to_owned())
            .or_default()
            .insert(from_version, Box::new(upcast));
        self
    }

    /// Whether an upcaster brings `event_type` up from `from_version`.
    pub fn has(&self, event_type: &str, from_version: u32) -> bool {
        self.json
            .get(event_type)
            .is_some_and(|steps| steps.contains_key(&from_version))
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.json.is_empty()
    }

    pub(crate) fn upcast<'a>(
        &self,
        mut event: Cow<'a, RecordedEvent>,
    ) -> Result<Cow<'a, RecordedEvent>> {
        while let Some(upcast) = self
            .json
            .get(&event.event_type)
            .and_then(|versions| versions.get(&event.schema_version))
        {
            let fail = |message: String| Error::Upcast {
                event_type: event.event_type.clone(),
                from_version: event.schema_version,
                stream_id: event.stream_id.clone(),
                stream_version: event.stream_version,
                message,
            };
            if event.encoding != Encoding::Json {
                return Err(fail(format!(
                    "payload is stored as {}, upcasters need JSON",
                    event.encoding.name()
                )));
            }
            let value = serde_json::from_slice(&event.payload)
                .map_err(|e| fail(format!("payload is not valid JSON: {e}")))?;
            let upcasted = upcast(value).map_err(fail)?;
            let payload = serde_json::to_vec(&upcasted).map_err(|e| fail(e.to_string()))?;
            let event = event.to_mut();
            event.payload = payload;
            event.schema_version += 1;
        }
        Ok(event)
    }
}
