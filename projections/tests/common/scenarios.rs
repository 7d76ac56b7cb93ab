//! Engine scenarios run on both backends: crashes mid-batch, two workers, poison events.

use std::{collections::BTreeMap, future::Future, sync::atomic::Ordering, time::Duration};

use annals_core::{encode_event, Encoding, EventStore, ExpectedVersion, Position};
use annals_projections::{
    CheckpointStore, EngineOptions, Error, FailurePolicy, MemoryCheckpoints, PgCheckpoints,
    Projection, ProjectionEngine, RunningProjections, SubscriptionState,
};

use super::{append_tallies, expected_tallies, Tallies, Tally, TallyEvent};

pub const WAIT: Duration = Duration::from_secs(60);

pub fn fast() -> EngineOptions {
    EngineOptions::default()
        .batch_size(25)
        .idle_wait(Duration::from_millis(50))
        .lease_retry(Duration::from_millis(20))
        .restart_backoff(Duration::from_millis(20))
}

/// Reads the tallies table of a backend.
pub trait ReadTallies {
    fn tallies(&self) -> impl Future<Output = BTreeMap<String, Tally>> + Send;
}

impl ReadTallies for MemoryCheckpoints {
    async fn tallies(&self) -> BTreeMap<String, Tally> {
        self.rows("tallies")
    }
}

impl ReadTallies for PgCheckpoints {
    async fn tallies(&self) -> BTreeMap<String, Tally> {
        super::pg_rows(self.pool()).await
    }
}

/// Workers killed at arbitrary points (between batches and mid-batch, handlers are slow)
/// while writers append; the final read model equals a from-scratch replay.
pub async fn killed_workers_resume_to_the_same_read_model<S, C>(store: S, read: C, rounds: u64)
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore + ReadTallies,
    Tallies: Projection<C, Event = TallyEvent>,
{
    let projection = Tallies {
        slow: Some(Duration::from_micros(300)),
        ..Tallies::default()
    };
    let engine = ProjectionEngine::new(store.clone(), read.clone())
        .with_options(fast())
        .register(projection);
    append_tallies(&store, "s", 10, 600, 3).await;
    let mut head = Position::START;
    for round in 0..rounds {
        let running = engine.start();
        head = append_tallies(&store, &format!("r{}", round % 4), 3, 20, 2).await;
        tokio::time::sleep(Duration::from_millis(round % 9 * 4 + 1)).await;
        running.abort().await;
    }
    let running = engine.start();
    running
        .wait_until_caught_up(head, WAIT)
        .await
        .expect("caught up");
    running.shutdown().await;
    assert_eq!(
        read.tallies().await,
        expected_tallies(&store).await,
        "the read model differs from a replay"
    );
}

/// Two engines run the same projection: with the lease one stands by; without it they
/// race and checkpoint fencing must still keep every effect single.
pub async fn two_workers_never_apply_an_event_twice<S, C>(store: S, read: C, lease: bool)
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore + ReadTallies,
    Tallies: Projection<C, Event = TallyEvent>,
{
    let engine = || {
        ProjectionEngine::new(store.clone(), read.clone())
            .with_options(fast().use_lease(lease))
            .register(Tallies {
                slow: Some(Duration::from_micros(50)),
                ..Tallies::default()
            })
    };
    let (one, two) = (engine().start(), engine().start());
    let head = append_tallies(&store, "s", 5, 1_000, 4).await;
    one.wait_until_caught_up(head, WAIT).await.expect("one");
    two.wait_until_caught_up(head, WAIT).await.expect("two");
    let states = [
        one.status().await.expect("status")[0].state,
        two.status().await.expect("status")[0].state,
    ];
    if lease {
        assert!(
            states.contains(&SubscriptionState::Standby),
            "no worker stood by: {states:?}"
        );
        // The active worker dies; the standby takes over and keeps the model current.
        let (active, standby) = if states[0] == SubscriptionState::Running {
            (one, two)
        } else {
            (two, one)
        };
        active.abort().await;
        let head = append_tallies(&store, "after", 3, 100, 2).await;
        standby
            .wait_until_caught_up(head, WAIT)
            .await
            .expect("failover");
        assert_eq!(
            standby.status().await.expect("status")[0].state,
            SubscriptionState::Running
        );
        standby.shutdown().await;
    } else {
        one.shutdown().await;
        two.shutdown().await;
    }
    assert_eq!(
        read.tallies().await,
        expected_tallies(&store).await,
        "lease: {lease}"
    );
}

async fn append_n<S: EventStore>(store: &S, n: i64) -> Position {
    let event = encode_event(&TallyEvent::Added { n }, Encoding::Json).expect("encode");
    store
        .append_to_stream(&format!("p{n}"), ExpectedVersion::Any, vec![event])
        .await
        .expect("append")
        .position
}

/// Starts `Tallies` with a live poison (n = 13) under `policy`, and appends 1, 13, 2 (each to
/// its own stream); returns the projection (to lift the poison), the engine, its workers and
/// the three positions.
async fn start_with_poison<S, C>(
    store: &S,
    read: &C,
    policy: FailurePolicy,
) -> (
    Tallies,
    ProjectionEngine<S, C>,
    RunningProjections<S, C>,
    Vec<Position>,
)
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
    Tallies: Projection<C, Event = TallyEvent>,
{
    let projection = Tallies {
        policy,
        ..Tallies::default()
    };
    projection.poison.store(true, Ordering::SeqCst);
    let engine = ProjectionEngine::new(store.clone(), read.clone())
        .with_options(fast())
        .register(projection.clone());
    let running = engine.start();
    let mut positions = Vec::new();
    for n in [1, 13, 2] {
        positions.push(append_n(store, n).await);
    }
    (projection, engine, running, positions)
}

/// A poison event is dead-lettered and later events still apply; the letter fails to
/// retry while the bug is there, retries once fixed, and is gone after.
pub async fn poison_event_is_dead_lettered<S, C>(store: S, read: C)
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore + ReadTallies,
    Tallies: Projection<C, Event = TallyEvent>,
{
    let (projection, engine, running, positions) =
        start_with_poison(&store, &read, FailurePolicy::DeadLetter).await;
    let head = positions[2];
    running
        .wait_until_caught_up(head, WAIT)
        .await
        .expect("caught up past the poison event");
    let rows = read.tallies().await;
    assert_eq!(rows.keys().collect::<Vec<_>>(), ["p1", "p2"]);
    let letters = engine.dead_letters(Some("tallies")).await.expect("letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].stream_id.as_str(), letters[0].attempts),
        ("p13", 2)
    );
    assert!(letters[0].error.contains("unlucky"), "{}", letters[0].error);
    let status = running.status().await.expect("status");
    assert_eq!((status[0].dead_letters, status[0].lag), (1, 0));
    assert!(matches!(
        engine.dead_letters(Some("nope")).await,
        Err(Error::UnknownProjection { .. })
    ));

    assert!(matches!(
        engine.retry_dead_letter(letters[0].id).await,
        Err(Error::Handler { .. })
    ));
    assert_eq!(
        engine.dead_letters(None).await.expect("letters").len(),
        1,
        "a failed retry lost the letter"
    );
    projection.poison.store(false, Ordering::SeqCst);
    engine
        .retry_dead_letter(letters[0].id)
        .await
        .expect("retry after the fix");
    assert_eq!(read.tallies().await.get("p13").map(|t| t.total), Some(13));
    assert!(engine.dead_letters(None).await.expect("letters").is_empty());
    assert!(matches!(
        engine.discard_dead_letter(letters[0].id).await,
        Err(Error::DeadLetterNotFound(_))
    ));
    running.shutdown().await;
}

/// With the halt policy the projection stops before the poison event, says why, and
/// applies nothing after it; a restart with the bug fixed goes on.
pub async fn poison_event_halts<S, C>(store: S, read: C)
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore + ReadTallies,
    Tallies: Projection<C, Event = TallyEvent>,
{
    let (projection, engine, running, positions) =
        start_with_poison(&store, &read, FailurePolicy::Halt).await;
    let err = running
        .wait_until_caught_up(positions[2], WAIT)
        .await
        .expect_err("halts");
    assert!(
        matches!(&err, Error::Halted { error, .. } if error.contains("unlucky")),
        "{err}"
    );
    let status = running.status().await.expect("status");
    assert_eq!(status[0].state, SubscriptionState::Halted);
    assert!(
        status[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("p13")),
        "{:?}",
        status[0].error
    );
    assert!(status[0].checkpoint < positions[1] && status[0].checkpoint >= positions[0]);
    assert!(
        !read.tallies().await.contains_key("p2"),
        "an event after the poison applied"
    );
    running.shutdown().await;
    let stored = engine.status().await.expect("stored status");
    assert_eq!(
        stored[0].state,
        SubscriptionState::Halted,
        "the halt is not persisted"
    );

    projection.poison.store(false, Ordering::SeqCst);
    let running = engine.start();
    running
        .wait_until_caught_up(positions[2], WAIT)
        .await
        .expect("resumes once fixed");
    running.shutdown().await;
    assert_eq!(read.tallies().await.len(), 3);
    assert_eq!(
        engine.status().await.expect("status")[0].state,
        SubscriptionState::Stopped
    );
}
