//! Commands that start a stream: decided against the default state and appended with
//! `NoStream`, without reading first.

use serde::{de::DeserializeOwned, Serialize};
use tracing::{field, Instrument};

use super::{ExecuteError, Executed, Repository};
use crate::{encode_event, Aggregate, EventStore, ExpectedVersion, Metadata, SnapshotStore};

impl<A, S> Repository<A, S>
where
    A: Aggregate + Serialize + DeserializeOwned,
    S: EventStore + SnapshotStore,
{
    /// Runs `command` on aggregate `id` as its first command: decided against the
    /// default state and appended with [`ExpectedVersion::NoStream`], in one round trip
    /// (no load). When the stream exists already, it runs as
    /// [`execute`](Repository::execute) does (load, decide, append), so the aggregate
    /// answers as it would (say, "already open").
    ///
    /// # Errors
    ///
    /// As [`execute`](Repository::execute).
    pub async fn create(
        &self,
        id: &str,
        command: A::Command,
    ) -> Result<Executed<A>, ExecuteError<A::Error>>
    where
        A::Command: Clone,
    {
        let stream_id = Self::stream_id(id);
        let span = tracing::info_span!(
            "annals.create",
            aggregate = A::TYPE,
            stream = %stream_id,
            version = field::Empty,
        );
        let created: Result<Option<Executed<A>>, ExecuteError<A::Error>> = async {
            let command_id = uuid::Uuid::now_v7();
            let metadata = Metadata {
                correlation_id: Some(command_id),
                causation_id: Some(command_id),
                ..Metadata::default()
            };
            let mut state = A::default();
            // Refused, or nothing to do, against a new aggregate: the stream may exist
            // already; decide on its real state.
            let Ok(events) = state.handle(command.clone()) else {
                return Ok(None);
            };
            if events.is_empty() {
                return Ok(None);
            }
            let new_events = events
                .iter()
                .map(|e| {
                    encode_event(e, self.options.event_encoding)
                        .map(|n| n.with_metadata(metadata.clone()))
                })
                .collect::<crate::Result<Vec<_>>>()?;
            match self
                .store
                .append_to_stream(&stream_id, ExpectedVersion::NoStream, new_events)
                .await
            {
                Ok(appended) => {
                    for event in &events {
                        state.apply(event);
                    }
                    let version = appended.version();
                    tracing::Span::current().record("version", version);
                    self.maybe_snapshot(&stream_id, &state, 0, version).await;
                    Ok(Some(Executed {
                        state,
                        version,
                        events,
                        position: Some(appended.position),
                        retries: 0,
                        repeated: false,
                    }))
                }
                // It exists: decide on its real state.
                Err(e) if e.is_conflict() => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
        .instrument(span)
        .await;
        let created = created?;
        match created {
            Some(done) => {
                let result = Ok(done);
                Self::count(&result);
                result
            }
            None => self.execute(id, command).await,
        }
    }
}
