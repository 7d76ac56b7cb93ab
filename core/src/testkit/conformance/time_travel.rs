//! Time travel through a [`Repository`](crate::Repository) and the log: an aggregate as of
//! a version or a time (from a snapshot only when it is at or before that point), and the
//! log position from which every event recorded at or after a time is read.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    Aggregate, AsOf, DomainEvent, Error, EventStore, ReadAll, ReadStream, Repository,
    RepositoryOptions, SnapshotStore,
};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Tally {
    total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum TallyEvent {
    #[serde(rename = "conformance-tallied")]
    Tallied { n: u64 },
}
impl DomainEvent for TallyEvent {}

impl Aggregate for Tally {
    const TYPE: &'static str = "conformance_tally";
    type Command = u64;
    type Event = TallyEvent;
    type Error = std::convert::Infallible;

    fn handle(&self, n: u64) -> Result<Vec<TallyEvent>, Self::Error> {
        Ok(vec![TallyEvent::Tallied { n }])
    }

    fn apply(&mut self, TallyEvent::Tallied { n }: &TallyEvent) {
        self.total += n;
    }
}

fn sum(to: u64) -> u64 {
    (1..=to).sum()
}

/// Twelve events a few milliseconds apart, a snapshot every five (the stored one at 10):
/// loads at, between and before events, with and without the snapshot; reads by time.
pub async fn time_travel<S>(store: S)
where
    S: EventStore + SnapshotStore + Clone + 'static,
{
    let tallies = Repository::<Tally, _>::new(store.clone())
        .with_options(RepositoryOptions::default().snapshot_every(Some(5)));
    let id = super::unique("t");
    let before_all = chrono::Utc::now() - chrono::Duration::milliseconds(1);
    for n in 1..=12 {
        tallies.execute(&id, n).await.expect("tally");
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let stream = Repository::<Tally, S>::stream_id(&id);
    let events = store
        .read_stream(&stream, ReadStream::all())
        .await
        .expect("read");
    let at = |v: usize| events[v - 1].recorded_at;
    let between = |v: usize| at(v) + (at(v + 1) - at(v)) / 2;

    // By version: the snapshot (at 10) only from 10 on.
    let v7 = tallies.load_as_of(&id, AsOf::Version(7)).await.expect("v7");
    assert_eq!(
        (v7.version, v7.state.total, v7.from_snapshot),
        (7, sum(7), None)
    );
    let v11 = tallies
        .load_as_of(&id, AsOf::Version(11))
        .await
        .expect("v11");
    assert_eq!(
        (v11.version, v11.state.total, v11.from_snapshot),
        (11, sum(11), Some(10))
    );
    assert!(matches!(
        tallies.load_as_of(&id, AsOf::Version(13)).await,
        Err(Error::VersionPastEnd {
            requested: 13,
            current: 12,
            ..
        })
    ));
    let none = tallies.load_as_of(&id, AsOf::Version(0)).await.expect("v0");
    assert_eq!((none.version, none.state.total), (0, 0));

    // By time: at an event includes it; between two, the earlier; before all, not yet.
    let t3 = tallies
        .load_as_of(&id, AsOf::Time(at(3)))
        .await
        .expect("t3");
    assert_eq!((t3.version, t3.state.total), (3, sum(3)));
    let t7 = tallies
        .load_as_of(&id, AsOf::Time(between(7)))
        .await
        .expect("t7");
    assert_eq!(
        (t7.version, t7.state.total, t7.from_snapshot),
        (7, sum(7), None)
    );
    let t11 = tallies
        .load_as_of(&id, AsOf::Time(between(11)))
        .await
        .expect("t11");
    assert_eq!(
        (t11.version, t11.state.total, t11.from_snapshot),
        (11, sum(11), Some(10))
    );
    assert!(matches!(
        tallies.load_as_of(&id, AsOf::Time(before_all)).await,
        Err(Error::NotYet { .. })
    ));

    // The log by time: reading after position_at(t) gives every event recorded at or
    // after t; everything up to it was recorded before t.
    for t in [before_all, at(1), between(4), at(8), between(11)] {
        let from = store.position_at(t).await.expect("position_at");
        let after = store
            .read_all(ReadAll::after(from).limit(1_000))
            .await
            .expect("read");
        let ours: Vec<u64> = after
            .iter()
            .filter(|e| e.stream_id == stream)
            .map(|e| e.stream_version)
            .collect();
        let expected: Vec<u64> = events
            .iter()
            .filter(|e| e.recorded_at >= t)
            .map(|e| e.stream_version)
            .collect();
        assert!(
            expected.iter().all(|v| ours.contains(v)),
            "after position_at({t}): {ours:?}, missing some of {expected:?}"
        );
        assert!(
            events
                .iter()
                .filter(|e| e.position <= from)
                .all(|e| e.recorded_at < t),
            "an event up to position_at({t}) was recorded at or after it"
        );
    }
    let future = chrono::Utc::now() + chrono::Duration::hours(1);
    assert_eq!(
        store.position_at(future).await.expect("future"),
        store.head().await.expect("head"),
        "a time past the log's end reads only what comes next"
    );
}
