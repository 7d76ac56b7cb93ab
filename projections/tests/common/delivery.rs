//! The subscription core with an effect outside the database (as a relay's publish): it is
//! delivered before the checkpoint commits, again after a crash in between, never lost; a
//! broker that is down stops and restarts the worker without dead-lettering or halting;
//! an event that can never be delivered is dead-lettered without retries.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use annals_core::{EventStore, Position, RecordedEvent};
use annals_projections::{
    CheckpointStore, Checkpoints, Failure, FailurePolicy, ProjectionEngine, RetryPolicy,
    Subscriber, SubscriptionState,
};
use uuid::Uuid;

use super::{
    append_tallies,
    scenarios::{fast, WAIT},
};

/// Delivers events to a shared log (the "broker"), failing as told.
#[derive(Clone, Default)]
pub struct Recorder {
    /// Every delivery, in order (an event may appear more than once: at least once).
    pub delivered: Arc<Mutex<Vec<(Uuid, String, u64)>>>,
    /// Deliveries to fail as `Unavailable` before the broker comes back.
    pub down_for: Arc<AtomicUsize>,
    /// How many deliveries were refused as `Unavailable`.
    pub refused: Arc<AtomicUsize>,
    /// Streams whose events can never be delivered (`Poison`).
    pub undeliverable: Arc<Mutex<HashSet<String>>>,
    /// Sleep per batch after delivering it (before the checkpoint commits).
    pub slow: Option<Duration>,
    /// Signalled after each delivery, before that sleep.
    pub on_delivery: Arc<tokio::sync::Notify>,
}

impl<C: Checkpoints> Subscriber<C> for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    fn kind(&self) -> &'static str {
        "relay"
    }

    fn event_types(&self) -> Option<Vec<String>> {
        None
    }

    fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(5),
        }
    }

    fn on_failure(&self) -> FailurePolicy {
        FailurePolicy::DeadLetter
    }

    async fn deliver(&self, events: &[RecordedEvent]) -> Result<(), Failure> {
        let down = self
            .down_for
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if down.is_ok() {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(Failure::Unavailable("connection refused".into()));
        }
        let bad = self.undeliverable.lock().expect("lock").clone();
        if let Some(e) = events.iter().find(|e| bad.contains(&e.stream_id)) {
            return Err(Failure::Poison(
                format!(
                    "{}@{} is over the size limit",
                    e.stream_id, e.stream_version
                )
                .into(),
            ));
        }
        self.delivered.lock().expect("lock").extend(
            events
                .iter()
                .map(|e| (e.event_id, e.stream_id.clone(), e.stream_version)),
        );
        self.on_delivery.notify_one();
        if let Some(slow) = self.slow {
            tokio::time::sleep(slow).await;
        }
        Ok(())
    }
}

impl Recorder {
    /// Each event's first delivery, checked to be in stream order, and the set delivered.
    pub fn first_deliveries(&self) -> HashSet<Uuid> {
        let delivered = self.delivered.lock().expect("lock");
        let mut seen = HashSet::new();
        let mut last: HashMap<&str, u64> = HashMap::new();
        for (id, stream, version) in delivered.iter() {
            if seen.insert(*id) {
                let previous = last.insert(stream, *version).unwrap_or(0);
                assert!(
                    *version > previous,
                    "{stream}@{version} was first delivered after @{previous}"
                );
            }
        }
        seen
    }
}

async fn every_event<S: EventStore>(store: &S) -> HashSet<Uuid> {
    let mut ids = HashSet::new();
    let mut after = Position::START;
    loop {
        let page = store
            .read_all(annals_core::ReadAll::after(after).limit(1_000))
            .await
            .expect("read");
        let Some(last) = page.last() else { return ids };
        after = last.position;
        ids.extend(page.iter().map(|e| e.event_id));
    }
}

/// The broker is down for a while: the worker restarts (no attempt counted, nothing
/// dead-lettered, no halt) and, once it is back, every event is delivered, each stream in
/// order.
pub async fn an_unavailable_broker_restarts_the_worker_and_loses_nothing<S, C>(store: S, read: C)
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
{
    let recorder = Recorder::default();
    recorder.down_for.store(12, Ordering::SeqCst);
    let engine = ProjectionEngine::new(store.clone(), read.clone())
        .with_options(fast())
        .subscribe(recorder.clone());
    let running = engine.start();
    let head = append_tallies(&store, "b", 4, 200, 3).await;
    running
        .wait_until_caught_up(head, WAIT)
        .await
        .expect("caught up");
    assert_eq!(
        recorder.refused.load(Ordering::SeqCst),
        12,
        "the broker was never down"
    );
    assert_eq!(
        recorder.first_deliveries(),
        every_event(&store).await,
        "an event was lost"
    );
    assert!(engine.dead_letters(None).await.expect("letters").is_empty());
    let status = running.status().await.expect("status");
    assert_eq!(
        (status[0].state, status[0].kind),
        (SubscriptionState::Running, "relay")
    );
    running.shutdown().await;
}

/// Workers killed between delivering a batch and committing its checkpoint (right after a
/// delivery, while the batch is still open) deliver it again: at least once, never lost,
/// each stream first delivered in order.
pub async fn a_crash_between_deliver_and_commit_delivers_again<S, C>(store: S, read: C)
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
{
    let recorder = Recorder {
        slow: Some(Duration::from_millis(50)),
        ..Recorder::default()
    };
    let engine = ProjectionEngine::new(store.clone(), read.clone())
        .with_options(fast())
        .subscribe(recorder.clone());
    let mut head = append_tallies(&store, "k", 5, 300, 2).await;
    let mut kills = 0;
    for round in 0..10u64 {
        let running = engine.start();
        head = append_tallies(&store, &format!("k{}", round % 3), 2, 10, 2).await;
        if tokio::time::timeout(WAIT, recorder.on_delivery.notified())
            .await
            .is_ok()
        {
            kills += 1;
        }
        running.abort().await;
    }
    let running = engine.start();
    running
        .wait_until_caught_up(head, WAIT)
        .await
        .expect("caught up");
    running.shutdown().await;
    let deliveries = recorder.delivered.lock().expect("lock").len();
    let distinct = recorder.first_deliveries();
    assert_eq!(distinct, every_event(&store).await, "an event was lost");
    assert_eq!(kills, 10);
    assert!(
        deliveries > distinct.len(),
        "no batch was ever delivered twice: the kills missed the window"
    );
}

/// An event that can never be delivered is dead-lettered at once (no retries), the rest go
/// on.
pub async fn an_undeliverable_event_is_dead_lettered_without_retries<S, C>(store: S, read: C)
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
{
    let recorder = Recorder::default();
    recorder
        .undeliverable
        .lock()
        .expect("lock")
        .insert("huge-0".to_owned());
    let engine = ProjectionEngine::new(store.clone(), read.clone())
        .with_options(fast())
        .subscribe(recorder.clone());
    let running = engine.start();
    append_tallies(&store, "fine", 2, 20, 2).await;
    append_tallies(&store, "huge", 1, 1, 1).await;
    let head = append_tallies(&store, "after", 2, 20, 2).await;
    running
        .wait_until_caught_up(head, WAIT)
        .await
        .expect("caught up");
    let letters = engine.dead_letters(None).await.expect("letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        (letters[0].stream_id.as_str(), letters[0].attempts),
        ("huge-0", 1)
    );
    assert!(letters[0].error.contains("size limit"));
    assert_eq!(recorder.first_deliveries().len(), 40);
    running.shutdown().await;
}
