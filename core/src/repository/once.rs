//! Commands with an id (an idempotency key): applied at most once per stream, and a repeat
//! answered with the outcome recorded the first time.
//!
//! A command's events get ids derived from the command id ([`command_event_id`]), so the
//! log itself records which commands a stream has applied: before deciding, the repository
//! looks up the command's first event in the stream. A retry after a lost reply (the append
//! committed, the answer did not arrive) therefore neither applies the command twice nor
//! is refused because the first attempt already changed the state; and two attempts racing
//! each other append once (the store recognises the second append's event ids).

use serde::{de::DeserializeOwned, Serialize};
use tracing::{field, Instrument};
use uuid::Uuid;

use super::{ExecuteError, Executed, Repository};
use crate::{
    codec::decode_value, Aggregate, EventStore, Metadata, ReadStream, Result, SnapshotStore,
};

/// The id of the `index`-th event (0-based) a command with id `command_id` produces: a
/// UUID v5 named by the index in the command id's namespace. Deterministic, so a repeated
/// command produces the same ids; distinct per command and index.
pub fn command_event_id(command_id: Uuid, index: u32) -> Uuid {
    Uuid::new_v5(&command_id, &index.to_be_bytes())
}

/// At most this many events are read back as one command's recorded outcome.
const MAX_EVENTS_PER_COMMAND: usize = 1024;

impl<A, S> Repository<A, S>
where
    A: Aggregate + Serialize + DeserializeOwned,
    S: EventStore + SnapshotStore,
{
    /// Runs `command`, identified by `command_id`, against aggregate `id`, at most once:
    /// if the stream already holds the events of a command with that id, they are returned
    /// (with [`Executed::repeated`] set) instead of deciding again. The new events' ids are
    /// derived from the command id ([`command_event_id`]); their causation id is the
    /// command id, and their correlation id too unless `metadata` carries one.
    ///
    /// A command that was rejected, or that decided nothing happens, leaves no trace: a
    /// repeat decides again, on the state it then finds.
    ///
    /// ```
    /// # use annals_core::{Aggregate, DomainEvent, Repository};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: u64 }
    /// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    /// # enum CounterEvent { #[serde(rename = "incremented")] Incremented { by: u64 } }
    /// # impl DomainEvent for CounterEvent {}
    /// # impl Aggregate for Counter {
    /// #     const TYPE: &'static str = "counter";
    /// #     type Command = u64; type Event = CounterEvent; type Error = std::convert::Infallible;
    /// #     fn handle(&self, by: u64) -> Result<Vec<CounterEvent>, Self::Error> { Ok(vec![CounterEvent::Incremented { by }]) }
    /// #     fn apply(&mut self, CounterEvent::Incremented { by }: &CounterEvent) { self.value += by }
    /// # }
    /// async fn bump_once<S>(counters: &Repository<Counter, S>) -> Result<(), Box<dyn std::error::Error>>
    /// where
    ///     S: annals_core::EventStore + annals_core::SnapshotStore,
    /// {
    ///     let command_id = uuid::Uuid::now_v7(); // sent by the client with its request
    ///     let first = counters.execute_once("c-1", command_id, 2).await?;
    ///     // The reply was lost; the client sends the same request again.
    ///     let again = counters.execute_once("c-1", command_id, 2).await?;
    ///     assert!(again.repeated && again.version == first.version);
    ///     assert_eq!(again.state.value, 2);
    ///     Ok(())
    /// }
    /// # fn main() {}
    /// ```
    ///
    /// # Errors
    ///
    /// As [`execute`](Repository::execute).
    pub async fn execute_once(
        &self,
        id: &str,
        command_id: Uuid,
        command: A::Command,
    ) -> Result<Executed<A>, ExecuteError<A::Error>>
    where
        A::Command: Clone,
    {
        self.execute_once_with_metadata(id, command_id, command, Metadata::default())
            .await
    }

    /// [`execute_once`](Repository::execute_once), stamping `metadata` on the new events
    /// (its causation id is replaced by the command id).
    ///
    /// # Errors
    ///
    /// As [`execute`](Repository::execute).
    pub async fn execute_once_with_metadata(
        &self,
        id: &str,
        command_id: Uuid,
        command: A::Command,
        mut metadata: Metadata,
    ) -> Result<Executed<A>, ExecuteError<A::Error>>
    where
        A::Command: Clone,
    {
        metadata.causation_id = Some(command_id);
        metadata.correlation_id = metadata.correlation_id.or(Some(command_id));
        let stream_id = Self::stream_id(id);
        let span = tracing::info_span!(
            "annals.execute",
            aggregate = A::TYPE,
            stream = %stream_id,
            command_id = %command_id,
            version = field::Empty,
            retries = field::Empty,
            cached = field::Empty,
        );
        self.run(
            &stream_id,
            command,
            metadata,
            Some(command_id),
            super::Start::Load,
        )
        .instrument(span)
        .await
    }

    /// The events, version and position command `command_id` recorded on `stream_id`, if
    /// it was applied there.
    pub(super) async fn applied(
        &self,
        stream_id: &str,
        command_id: Uuid,
    ) -> Result<Option<Recorded<A::Event>>> {
        let first = command_event_id(command_id, 0);
        let Some(first) = self.store.event_by_id(stream_id, first).await? else {
            return Ok(None);
        };
        let recorded = self
            .store
            .read_stream(
                stream_id,
                ReadStream::forward_from(first.stream_version).limit(MAX_EVENTS_PER_COMMAND),
            )
            .await?;
        let mine = recorded
            .iter()
            .zip(0u32..)
            .take_while(|(e, i)| e.event_id == command_event_id(command_id, *i));
        let mut outcome = Recorded {
            events: Vec::new(),
            version: first.stream_version,
            position: first.position,
        };
        for (raw, _) in mine {
            outcome
                .events
                .push(decode_value::<A::Event>(raw, &self.upcasters)?);
            outcome.version = raw.stream_version;
            outcome.position = raw.position;
        }
        tracing::debug!(%command_id, version = outcome.version, "the command was applied before; answering with its outcome");
        Ok(Some(outcome))
    }
}

/// What a command recorded the first time it was applied.
pub(super) struct Recorded<E> {
    pub(super) events: Vec<E>,
    pub(super) version: u64,
    pub(super) position: crate::Position,
}
