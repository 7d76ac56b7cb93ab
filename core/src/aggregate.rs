use serde::{de::DeserializeOwned, Serialize};

/// A consistency boundary whose state is the fold of its events.
///
/// `handle` decides which events a command produces; `apply` folds one event into the
/// state. Both are synchronous and free of I/O, so an aggregate is tested without a
/// database (see `testkit::TestHarness` behind the `testkit` feature) and runs unchanged
/// on every store. State starts at [`Default`].
///
/// # Example
///
/// ```
/// use annals_core::{Aggregate, DomainEvent};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Default, Serialize, Deserialize)]
/// struct Counter { value: u64 }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum CounterEvent {
///     #[serde(rename = "incremented")]
///     Incremented { by: u64 },
/// }
/// impl DomainEvent for CounterEvent {}
///
/// #[derive(Debug, thiserror::Error, PartialEq)]
/// #[error("increment must be positive")]
/// struct ZeroIncrement;
///
/// impl Aggregate for Counter {
///     const TYPE: &'static str = "counter";
///     type Command = u64;
///     type Event = CounterEvent;
///     type Error = ZeroIncrement;
///
///     fn handle(&self, by: u64) -> Result<Vec<CounterEvent>, ZeroIncrement> {
///         if by == 0 { return Err(ZeroIncrement); }
///         Ok(vec![CounterEvent::Incremented { by }])
///     }
///
///     fn apply(&mut self, event: &CounterEvent) {
///         match event { CounterEvent::Incremented { by } => self.value += by }
///     }
/// }
/// # fn main() {}
/// ```
pub trait Aggregate: Default + Send + Sync + 'static {
    /// Persisted aggregate type name. Part of the data format: it prefixes stream ids and
    /// keys snapshots, so never derive it from a Rust type path.
    const TYPE: &'static str;

    /// Version of the snapshot encoding of this aggregate's state. Bump it whenever the
    /// state's shape changes; snapshots written under another version are ignored and the
    /// state is rebuilt from events.
    const SNAPSHOT_VERSION: u32 = 1;

    /// What callers ask the aggregate to do.
    type Command: Send;

    /// What happened, as recorded in the stream.
    type Event: DomainEvent;

    /// Why a command was rejected (a domain error, separate from store errors).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides which events `command` produces given the current state.
    ///
    /// # Errors
    ///
    /// Returns the domain error when the command is not allowed in this state.
    fn handle(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into the state. Must not fail: the event already happened.
    fn apply(&mut self, event: &Self::Event);
}

/// An event type of an aggregate, usually an enum with one variant per event.
///
/// The persisted event type name is the serde variant name, so give each variant an
/// explicit `#[serde(rename = "...")]` (or a `rename_all` on the enum): renaming a Rust
/// variant must not change stored data. With the default JSON encoding the variant's
/// content is stored on its own (queryable as `payload->>'amount'` in Postgres) and the
/// name goes in the `event_type` column.
pub trait DomainEvent:
    Serialize + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
    /// Schema version this code writes for this event. Older stored versions pass
    /// through the registered [`Upcasters`](crate::Upcasters) before decoding.
    fn schema_version(&self) -> u32 {
        1
    }
}
