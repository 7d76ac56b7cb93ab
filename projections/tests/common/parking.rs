//! Parked streams (`FailurePolicy::Park`), on both backends: a poison event dead-letters and
//! the later events of its stream wait behind it, in order, while other streams go on; a
//! retry or a discard of the head releases them in stream order.

use std::sync::atomic::Ordering;

use annals_core::{EventStore, Position};
use annals_projections::{
    CheckpointStore, DeadLetter, Error, FailurePolicy, Projection, ProjectionEngine,
    RunningProjections,
};

use super::{
    add,
    scenarios::{fast, ReadTallies, WAIT},
    Tallies, TallyEvent,
};

/// `p` gets 1, 13 (poison), 3, 4; `q` gets 1, 2, 3. Returns the projection (to lift the
/// poison), the engine and its running workers, caught up.
async fn parked<S, C>(
    store: &S,
    read: &C,
) -> (Tallies, ProjectionEngine<S, C>, RunningProjections<S, C>)
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore + ReadTallies,
    Tallies: Projection<C, Event = TallyEvent>,
{
    let projection = Tallies {
        policy: FailurePolicy::Park,
        ..Tallies::default()
    };
    projection.poison.store(true, Ordering::SeqCst);
    let engine = ProjectionEngine::new(store.clone(), read.clone())
        .with_options(fast())
        .register(projection.clone());
    let running = engine.start();
    let mut head = Position::START;
    for (stream, n) in [
        ("p", 1),
        ("q", 1),
        ("p", 13),
        ("q", 2),
        ("p", 3),
        ("p", 4),
        ("q", 3),
    ] {
        head = add(store, stream, n).await;
    }
    running
        .wait_until_caught_up(head, WAIT)
        .await
        .expect("caught up past the poison");
    (projection, engine, running)
}

fn versions(letters: &[DeadLetter], stream: &str) -> Vec<u64> {
    letters
        .iter()
        .filter(|d| d.stream_id == stream)
        .map(|d| d.stream_version)
        .collect()
}

/// The poison event's stream waits behind it (new events too), the other stream goes on; a
/// parked event cannot be retried past its head; once the bug is fixed, retrying the head
/// applies it and everything parked behind it, in order.
pub async fn a_poison_event_parks_its_stream_until_retried<S, C>(store: S, read: C)
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore + ReadTallies,
    Tallies: Projection<C, Event = TallyEvent>,
{
    let (projection, engine, running) = parked(&store, &read).await;
    let rows = read.tallies().await;
    assert_eq!(rows.get("q").map(|t| (t.total, t.applied)), Some((6, 3)));
    assert_eq!(
        rows.get("p").map(|t| (t.total, t.applied)),
        Some((1, 1)),
        "an event of the parked stream applied"
    );
    let letters = engine.dead_letters(Some("tallies")).await.expect("letters");
    assert_eq!(versions(&letters, "p"), [2, 3, 4]);
    let head = letters
        .iter()
        .find(|d| d.stream_version == 2)
        .expect("head");
    assert!(head.error.contains("unlucky"), "{}", head.error);
    assert!(
        letters
            .iter()
            .filter(|d| d.stream_version > 2)
            .all(|d| d.error.contains("parked") && d.attempts == 0),
        "{letters:?}"
    );

    // A parked event cannot jump its head.
    let parked = letters
        .iter()
        .find(|d| d.stream_version == 3)
        .expect("parked");
    assert!(matches!(
        engine.retry_dead_letter(parked.id).await,
        Err(Error::ParkedBehind { head: h, .. }) if h == head.id
    ));

    // New events of the parked stream park too, while the worker runs.
    let later = add(&store, "p", 5).await;
    running
        .wait_until_caught_up(later, WAIT)
        .await
        .expect("caught up");
    let letters = engine.dead_letters(Some("tallies")).await.expect("letters");
    assert_eq!(versions(&letters, "p"), [2, 3, 4, 5]);

    // Still poisoned: the retry fails and nothing moves.
    assert!(matches!(
        engine.retry_dead_letter(head.id).await,
        Err(Error::Handler { .. })
    ));
    assert_eq!(read.tallies().await.get("p").map(|t| t.applied), Some(1));

    // Fixed: the head and everything behind it apply, in stream order (Tallies refuses a
    // version at or below the last one applied).
    projection.poison.store(false, Ordering::SeqCst);
    engine
        .retry_dead_letter(head.id)
        .await
        .expect("retry the head");
    assert!(engine.dead_letters(None).await.expect("letters").is_empty());
    let p = read.tallies().await.get("p").cloned().expect("p");
    assert_eq!(
        (p.total, p.applied, p.last_version),
        (1 + 13 + 3 + 4 + 5, 5, 5)
    );

    // And the stream is free again.
    let after = add(&store, "p", 6).await;
    running
        .wait_until_caught_up(after, WAIT)
        .await
        .expect("caught up");
    assert_eq!(read.tallies().await.get("p").map(|t| t.applied), Some(6));
    assert!(engine.dead_letters(None).await.expect("letters").is_empty());
    running.shutdown().await;
}

/// Discarding the head lets the stream go on without it: the parked events apply in order;
/// one of them that fails in turn becomes the stream's head letter, with its own error,
/// and the rest stay parked behind it.
pub async fn discarding_the_head_releases_the_parked_events<S, C>(store: S, read: C)
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore + ReadTallies,
    Tallies: Projection<C, Event = TallyEvent>,
{
    let (_projection, engine, running) = parked(&store, &read).await;
    // Another poison behind the first, and one more event behind that.
    add(&store, "p", 13).await;
    let head = add(&store, "p", 7).await;
    running
        .wait_until_caught_up(head, WAIT)
        .await
        .expect("caught up");
    let letters = engine.dead_letters(Some("tallies")).await.expect("letters");
    assert_eq!(versions(&letters, "p"), [2, 3, 4, 5, 6]);
    let first = letters
        .iter()
        .find(|d| d.stream_version == 2)
        .expect("head");

    let released = engine.discard_dead_letter(first.id).await;
    assert!(
        matches!(released, Err(Error::Handler { .. })),
        "the second poison should fail on release: {released:?}"
    );
    let p = read.tallies().await.get("p").cloned().expect("p");
    assert_eq!(
        (p.total, p.applied, p.last_version),
        (1 + 3 + 4, 3, 4),
        "the released events did not apply in order"
    );
    let letters = engine.dead_letters(Some("tallies")).await.expect("letters");
    assert_eq!(versions(&letters, "p"), [5, 6]);
    let new_head = letters
        .iter()
        .find(|d| d.stream_version == 5)
        .expect("new head");
    assert!(
        new_head.error.contains("unlucky") && new_head.attempts >= 1,
        "the failed parked event did not become the head with its own error: {new_head:?}"
    );
    // Discarding that one too releases the last.
    engine
        .discard_dead_letter(new_head.id)
        .await
        .expect("discard the new head");
    let p = read.tallies().await.get("p").cloned().expect("p");
    assert_eq!((p.total, p.applied, p.last_version), (1 + 3 + 4 + 7, 4, 6));
    assert!(engine.dead_letters(None).await.expect("letters").is_empty());
    running.shutdown().await;
}
