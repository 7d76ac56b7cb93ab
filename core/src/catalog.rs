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
