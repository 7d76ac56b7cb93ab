//! Time travel: an aggregate as it stood at a version of its stream or at a moment.

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Serialize};

use super::{Loaded, Repository};
use crate::{Aggregate, Error, EventStore, ReadStream, RecordedEvent, Result, SnapshotStore};

/// The point of its history to load an aggregate at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    /// After the event with this stream version (0: before the first).
    Version(u64),
    /// After the last event recorded at or before this time: the stream's events in
    /// version order up to the first one recorded after it (`recorded_at` is the appending
    /// transaction's start time).
    Time(DateTime<Utc>),
}

impl<A, S> Repository<A, S>
where
    A: Aggregate + Serialize + DeserializeOwned,
    S: EventStore + SnapshotStore,
{
    /// Loads aggregate `id` as it stood at `as_of`, from a snapshot only when the snapshot
    /// is at or before that point.
    ///
    /// ```
    /// # use annals_core::{AsOf, Aggregate, Repository};
    /// # async fn demo<A, S>(accounts: Repository<A, S>) -> annals_core::Result<()>
    /// # where A: Aggregate + serde::Serialize + serde::de::DeserializeOwned,
    /// #       S: annals_core::EventStore + annals_core::SnapshotStore {
    /// let march_15 = "2026-03-15T00:00:00Z".parse().expect("a time");
    /// let then = accounts.load_as_of("ada", AsOf::Time(march_15)).await?;
    /// println!("version {} then", then.version);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::VersionPastEnd`] for a version the stream has not reached,
    /// [`Error::NotYet`] for a time before its first event, and as
    /// [`load`](Repository::load).
    pub async fn load_as_of(&self, id: &str, as_of: AsOf) -> Result<Loaded<A>> {
        let stream_id = Self::stream_id(id);
        let (events, version) = match as_of {
            AsOf::Version(version) => {
                let events = self
                    .store
                    .read_stream(&stream_id, ReadStream::all().limit(limit(version)))
                    .await?;
                let reached = events.last().map_or(0, |e| e.stream_version);
                if reached < version {
                    return Err(Error::VersionPastEnd {
                        stream_id,
                        requested: version,
                        current: reached,
                    });
                }
                (events, version)
            }
            AsOf::Time(at) => {
                let mut events = self
                    .store
                    .read_stream(&stream_id, ReadStream::all())
                    .await?;
                let keep = events.iter().take_while(|e| e.recorded_at <= at).count();
                if keep == 0 {
                    return Err(Error::NotYet { stream_id, at });
                }
                events.truncate(keep);
                let version = events[keep - 1].stream_version;
                (events, version)
            }
        };
        self.fold_as_of(&stream_id, &events, version).await
    }

    /// Folds `events` (the stream from its start up to `version`), from the snapshot if
    /// it is at or before `version`.
    async fn fold_as_of(
        &self,
        stream_id: &str,
        events: &[RecordedEvent],
        version: u64,
    ) -> Result<Loaded<A>> {
        let snapshot = self
            .store
            .load_snapshot(stream_id, A::TYPE, A::SNAPSHOT_VERSION)
            .await?
            .filter(|s| s.stream_version <= version && s.stream_version > 0);
        if let Some(snapshot) = snapshot {
            if let Ok(state) = snapshot.encoding.decode::<A>(&snapshot.payload) {
                let after = usize::try_from(snapshot.stream_version).unwrap_or(usize::MAX);
                let tail = events.get(after..).unwrap_or_default();
                return self.fold(
                    state,
                    snapshot.stream_version,
                    Some(snapshot.stream_version),
                    tail,
                );
            }
        }
        self.fold(A::default(), 0, None, events)
    }
}

fn limit(version: u64) -> usize {
    usize::try_from(version).unwrap_or(usize::MAX)
}
