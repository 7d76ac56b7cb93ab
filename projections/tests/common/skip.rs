//! `skip`, on both backends: the operator's way out of a halt. The running worker resumes
//! by itself; with `park_stream` the rest of the poison event's stream waits behind the
//! letter (whatever the policy), in order; two operators skipping at once skip one event.

use std::sync::atomic::Ordering;

use annals_core::EventStore;
use annals_projections::{
    CheckpointStore, DeadLetter, Error, FailurePolicy, Projection, ProjectionEngine,
    SubscriptionState,
};

use super::{
    add,
    scenarios::{fast, ReadTallies, WAIT},
    Tallies, TallyEvent,
};

async fn wait_for_state<S, C>(
    running: &annals_projections::RunningProjections<S, C>,
    state: SubscriptionState,
) where
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
{
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let status = running.status().await.expect("status");
        if status[0].state == state {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never {state}: {status:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Tallies with the Halt policy, 13 poisoned, on a fresh engine.
fn halting<S, C>(store: &S, read: &C) -> (Tallies, ProjectionEngine<S, C>)
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
    Tallies: Projection<C, Event = TallyEvent>,
{
    let projection = Tallies {
        policy: FailurePolicy::Halt,
        ..Tallies::default()
    };
    projection.poison.store(true, Ordering::SeqCst);
    let engine = ProjectionEngine::new(store.clone(), read.clone())
        .with_options(fast())
        .register(projection.clone());
    (projection, engine)
}

/// Halt policy; `p` gets 1, 13 (poison), 3, and later 4; `q` gets 1, 2. Skipping with
/// `park_stream` parks `p`'s later events (new ones too) while `q` goes on, without
/// restarting the worker; a retry after the fix applies the head and then the parked
/// events in stream order.
pub async fn a_skipped_event_parks_its_stream_and_the_worker_resumes<S, C>(store: S, read: C)
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore + ReadTallies,
    Tallies: Projection<C, Event = TallyEvent>,
{
    let (projection, engine) = halting(&store, &read);
    assert!(
        matches!(
            engine.skip("tallies", false).await,
            Err(Error::NothingToSkip { .. })
        ),
        "skipped a projection that never ran"
    );
    let running = engine.start();
    for (stream, n) in [("p", 1), ("q", 1), ("p", 13), ("q", 2), ("p", 3)] {
        add(&store, stream, n).await;
    }
    wait_for_state(&running, SubscriptionState::Halted).await;

    let letter = engine.skip("tallies", true).await.expect("skip");
    assert_eq!((letter.stream_id.as_str(), letter.stream_version), ("p", 2));
    assert!(
        letter.attempts >= 1 && letter.parks_stream && letter.id > 0,
        "{letter:?}"
    );
    assert!(letter.error.contains("unlucky"), "{}", letter.error);
    // The same worker goes on by itself; p's next event parks, q's apply.
    let later = add(&store, "p", 4).await;
    running
        .wait_until_caught_up(later, WAIT)
        .await
        .expect("the halted worker resumed after the skip");
    let rows = read.tallies().await;
    assert_eq!(rows.get("q").map(|t| (t.total, t.applied)), Some((3, 2)));
    assert_eq!(rows.get("p").map(|t| (t.total, t.applied)), Some((1, 1)));
    let letters: Vec<DeadLetter> = engine.dead_letters(Some("tallies")).await.expect("letters");
    let versions: Vec<u64> = letters.iter().map(|d| d.stream_version).collect();
    assert_eq!(versions, [2, 3, 4], "{letters:?}");
    assert!(letters[1..]
        .iter()
        .all(|d| d.attempts == 0 && d.parks_stream));
    assert!(
        matches!(engine.retry_dead_letter(letters[1].id).await, Err(Error::ParkedBehind { head, .. }) if head == letter.id)
    );
    assert!(
        matches!(
            engine.skip("tallies", false).await,
            Err(Error::NothingToSkip { .. })
        ),
        "skipped a projection that is not halted"
    );

    projection.poison.store(false, Ordering::SeqCst);
    engine.retry_dead_letter(letter.id).await.expect("retry");
    assert!(engine.dead_letters(None).await.expect("letters").is_empty());
    let p = read.tallies().await.get("p").cloned().expect("p");
    assert_eq!((p.total, p.applied, p.last_version), (1 + 13 + 3 + 4, 4, 4));
    let after = add(&store, "p", 5).await;
    running
        .wait_until_caught_up(after, WAIT)
        .await
        .expect("free again");
    assert_eq!(read.tallies().await.get("p").map(|t| t.applied), Some(5));
    running.shutdown().await;
}

/// Without `park_stream`, the rest of the stream applies; two skips racing each other skip
/// one event between them, never two.
pub async fn racing_skips_skip_one_event<S, C>(store: S, read: C)
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore + ReadTallies,
    Tallies: Projection<C, Event = TallyEvent>,
{
    let (_projection, engine) = halting(&store, &read);
    let running = engine.start();
    add(&store, "p", 1).await;
    add(&store, "p", 13).await;
    // A second poison right behind: a skip that skipped two events would pass it.
    add(&store, "q", 13).await;
    let last = add(&store, "p", 3).await;
    wait_for_state(&running, SubscriptionState::Halted).await;
    running.shutdown().await;

    let (a, b) = tokio::join!(engine.skip("tallies", false), engine.skip("tallies", false));
    let skipped: Vec<_> = [a, b].into_iter().filter_map(Result::ok).collect();
    assert_eq!(skipped.len(), 1, "both skips went through");
    let letters = engine.dead_letters(Some("tallies")).await.expect("letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        (letters[0].stream_id.as_str(), letters[0].parks_stream),
        ("p", false)
    );

    // The next poison halts again: skip it too, and the rest of p applies.
    let running = engine.start();
    wait_for_state(&running, SubscriptionState::Halted).await;
    let second = engine.skip("tallies", false).await.expect("second skip");
    assert_eq!(second.stream_id, "q");
    running
        .wait_until_caught_up(last, WAIT)
        .await
        .expect("caught up");
    let p = read.tallies().await.get("p").cloned().expect("p");
    assert_eq!(
        (p.total, p.applied),
        (1 + 3, 2),
        "p's later event did not apply"
    );
    running.shutdown().await;
}
