//! The event types an application reads, and a verification pass over stored history:
//! decode every stored event (or a sample, or those after a position) with the current
//! code and upcasters, write nothing, and report per event type how many decode and the
//! first failures. New code that can no longer read old events is caught before it ships.

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    codec::decode_value, event_types_of, DomainEvent, EventStore, Position, ReadAll, RecordedEvent,
    Result, Upcasters,
};

type Check = fn(&RecordedEvent, &Upcasters) -> Result<()>;

fn check<E: DomainEvent>(event: &RecordedEvent, upcasters: &Upcasters) -> Result<()> {
    decode_value::<E>(event, upcasters).map(drop)
}

/// The event types (enums of [`DomainEvent`]) an application reads, by persisted name,
/// with the upcasters that bring old schema versions up to date.
///
/// ```
/// # use annals_core::{DomainEvent, EventCatalog};
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)]
/// # enum AccountEvent { #[serde(rename = "account-opened")] Opened { owner: String } }
/// # impl DomainEvent for AccountEvent {}
/// let catalog = EventCatalog::new().with::<AccountEvent>();
/// assert!(catalog.knows("account-opened"));
/// ```
#[derive(Clone, Default)]
pub struct EventCatalog {
    types: BTreeMap<&'static str, (&'static str, Check)>,
    upcasters: Arc<Upcasters>,
    /// Payload schemas by event type (feature `schema`).
    schemas: BTreeMap<String, serde_json::Value>,
    /// Schema versions the code writes, where not 1.
    versions: BTreeMap<String, u32>,
}

impl std::fmt::Debug for EventCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.types.iter().map(|(name, (rust, _))| (name, rust)))
            .finish()
    }
}

impl EventCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every variant of `E` (an externally tagged enum; its serde names are the
    /// persisted event types).
    #[must_use]
    pub fn with<E: DomainEvent>(mut self) -> Self {
        for name in event_types_of::<E>().unwrap_or_default() {
            self.types
                .insert(name, (std::any::type_name::<E>(), check::<E> as Check));
        }
        self
    }

    /// Decodes old schema versions through these upcasters.
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = Arc::new(upcasters);
        self
    }

    /// Adds every variant of `E` with its payload's JSON Schema (derived with `schemars`),
    /// for [`schema_file`](EventCatalog::schema_file) and
    /// [`check_schema_file`](EventCatalog::check_schema_file).
    #[cfg(feature = "schema")]
    #[must_use]
    pub fn with_schema<E: DomainEvent + schemars::JsonSchema>(mut self) -> Self {
        let root = schemars::schema_for!(E);
        let variants = crate::schema::variants(root.as_value());
        for name in event_types_of::<E>().unwrap_or_default() {
            if let Some(schema) = variants.get(*name) {
                self.schemas.insert((*name).to_owned(), schema.clone());
            }
        }
        self.with::<E>()
    }

    /// Declares the schema version the code writes for `event_type` (what its
    /// [`DomainEvent::schema_version`] returns; 1 when not declared).
    #[must_use]
    pub fn schema_version(mut self, event_type: &str, version: u32) -> Self {
        self.versions.insert(event_type.to_owned(), version);
        self
    }

    fn version_of(&self, event_type: &str) -> u32 {
        self.versions.get(event_type).copied().unwrap_or(1)
    }

    /// The schemas to commit: per event type, its schema version and payload schema, as
    /// stable, pretty JSON.
    pub fn schema_file(&self) -> String {
        let file: serde_json::Map<String, serde_json::Value> = self
            .schemas
            .iter()
            .map(|(name, schema)| {
                let entry = serde_json::json!({
                    "schema_version": self.version_of(name),
                    "schema": schema,
                });
                (name.clone(), entry)
            })
            .collect();
        let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Compares the code's schemas with a committed [`schema_file`](EventCatalog::schema_file):
    /// every incompatible change, naming the event type, the field and the change. An event
    /// type whose schema version went up is exempt when an upcaster from the recorded
    /// version is registered. Event types new in the code pass.
    ///
    /// # Errors
    ///
    /// The changes, when there is any (or the file does not parse).
    pub fn check_schema_file(
        &self,
        recorded: &str,
    ) -> std::result::Result<(), Vec<crate::schema::SchemaChange>> {
        use crate::schema::{compare, SchemaChange};
        let whole = |change: String| SchemaChange {
            event_type: String::new(),
            field: String::new(),
            change,
        };
        let recorded: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(recorded)
                .map_err(|e| vec![whole(format!("the schema file does not parse: {e}"))])?;
        let mut changes = Vec::new();
        for (name, entry) in &recorded {
            let old_version = entry
                .get("schema_version")
                .and_then(serde_json::Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(1);
            let Some(new) = self.schemas.get(name) else {
                changes.push(SchemaChange {
                    event_type: name.clone(),
                    field: String::new(),
                    change: "was removed: stored events of this type can no longer be read"
                        .to_owned(),
                });
                continue;
            };
            let new_version = self.version_of(name);
            if new_version > old_version {
                if !self.upcasters.has(name, old_version) {
                    changes.push(SchemaChange {
                        event_type: name.clone(),
                        field: String::new(),
                        change: format!(
                            "schema version went from {old_version} to {new_version} without an upcaster from {old_version}"
                        ),
                    });
                }
                continue;
            }
            let old = entry.get("schema").cloned().unwrap_or_default();
            compare(name, "", &old, new, &mut changes);
        }
        if changes.is_empty() {
            Ok(())
        } else {
            Err(changes)
        }
    }

    /// Whether `event_type` is in the catalog.
    pub fn knows(&self, event_type: &str) -> bool {
        self.types.contains_key(event_type)
    }

    /// The persisted names of the catalog's event types.
    pub fn event_types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.types.keys().copied()
    }

    /// Whether the current code decodes `event`; `None` for a type not in the catalog.
    pub fn check(&self, event: &RecordedEvent) -> Option<Result<()>> {
        let (_, check) = self.types.get(event.event_type.as_str())?;
        Some(check(event, &self.upcasters))
    }
}

/// What a verification pass reads.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verify {
    /// Only events after this position. Default: the start.
    pub after: Position,
    /// Check one event in this many (1: every one).
    pub sample_every: u64,
    /// How many failures to keep in the report.
    pub keep_failures: usize,
    /// Events per page.
    pub page: usize,
}

impl Default for Verify {
    fn default() -> Self {
        Self {
            after: Position::START,
            sample_every: 1,
            keep_failures: 20,
            page: 1_000,
        }
    }
}

impl Verify {
    /// Only events after `position`.
    #[must_use]
    pub fn after(mut self, position: Position) -> Self {
        self.after = position;
        self
    }

    /// One event in `n`.
    #[must_use]
    pub fn sample_every(mut self, n: u64) -> Self {
        self.sample_every = n.max(1);
        self
    }
}

/// One event the current code cannot read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyFailure {
    /// Its type.
    pub event_type: String,
    /// Its stream.
    pub stream_id: String,
    /// Its version there.
    pub stream_version: u64,
    /// Its place in the log.
    pub position: Position,
    /// Why it does not decode.
    pub error: String,
}

/// What a verification pass found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Per event type in the catalog: how many decoded, how many failed.
    pub decoded: BTreeMap<String, (u64, u64)>,
    /// Events of types the catalog does not hold (another service's, or retired), by type.
    pub unknown: BTreeMap<String, u64>,
    /// The first failures, in log order.
    pub failures: Vec<VerifyFailure>,
    /// Events read (checked or sampled out).
    pub read: u64,
    /// Where it stopped (the head when it started, or later).
    pub last: Position,
}

impl VerifyReport {
    /// How many events failed to decode.
    pub fn failed(&self) -> u64 {
        self.decoded.values().map(|(_, failed)| failed).sum()
    }
}

/// Decodes the stored events `options` selects with the catalog's code, page by page up to
/// the head as it was when the pass began, writing nothing. `progress` hears (events read,
/// head) after each page.
///
/// # Errors
///
/// Store errors (a failing event is a finding, not an error).
pub async fn verify<S: EventStore>(
    store: &S,
    catalog: &EventCatalog,
    options: &Verify,
    mut progress: impl FnMut(u64, Position),
) -> Result<VerifyReport> {
    let head = store.head().await?;
    let mut report = VerifyReport {
        last: options.after,
        ..VerifyReport::default()
    };
    while report.last < head {
        let page = store
            .read_all(ReadAll::after(report.last).limit(options.page.max(1)))
            .await?;
        let Some(last) = page.last() else { break };
        report.last = last.position;
        for event in &page {
            report.read += 1;
            if !report.read.is_multiple_of(options.sample_every.max(1)) {
                continue;
            }
            match catalog.check(event) {
                None => *report.unknown.entry(event.event_type.clone()).or_default() += 1,
                Some(outcome) => {
                    let counts = report.decoded.entry(event.event_type.clone()).or_default();
                    match outcome {
                        Ok(()) => counts.0 += 1,
                        Err(error) => {
                            counts.1 += 1;
                            if report.failures.len() < options.keep_failures {
                                report.failures.push(VerifyFailure {
                                    event_type: event.event_type.clone(),
                                    stream_id: event.stream_id.clone(),
                                    stream_version: event.stream_version,
                                    position: event.position,
                                    error: error.to_string(),
                                });
                            }
                        }
                    }
                }
            }
        }
        progress(report.read, head);
    }
    Ok(report)
}
