//! Starting a subscription at a time, on both backends: it handles every event recorded
//! since and none before; refused while it runs, and for a projection.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use annals_core::{EventStore, RecordedEvent};
use annals_projections::{CheckpointStore, Error, Failure, ProjectionEngine, Subscriber};

use super::{
    add,
    scenarios::{fast, WAIT},
};

/// Remembers the events it was given (as a relay would publish them).
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl<C: annals_projections::Checkpoints> Subscriber<C> for Seen {
    fn name(&self) -> &str {
        "seen"
    }

    fn kind(&self) -> &'static str {
        "relay"
    }

    fn event_types(&self) -> Option<Vec<String>> {
        None
    }

    async fn deliver(&self, events: &[RecordedEvent]) -> Result<(), Failure> {
        let mut seen = self.0.lock().expect("lock");
        seen.extend(
            events
                .iter()
                .map(|e| format!("{}@{}", e.stream_id, e.stream_version)),
        );
        Ok(())
    }
}

pub async fn a_subscription_started_at_a_time_sees_what_came_since<S, C>(store: S, read: C)
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
{
    for n in 1..=3 {
        add(&store, "old", n).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut head = annals_core::Position::START;
    for n in 1..=2 {
        head = add(&store, "new", n).await;
    }
    let seen = Seen::default();
    let engine = ProjectionEngine::new(store.clone(), read.clone())
        .with_options(fast())
        .subscribe(seen.clone());
    let from = store.position_at(since).await.expect("position_at");
    engine.start_from("seen", from).await.expect("start from");
    let running = engine.start();
    running
        .wait_until_caught_up(head, WAIT)
        .await
        .expect("caught up");
    // While it runs, the operator cannot move it.
    let moved = engine
        .start_from("seen", annals_core::Position::START)
        .await;
    assert!(matches!(moved, Err(Error::Unsupported(_))), "{moved:?}");
    running.shutdown().await;
    assert_eq!(*seen.0.lock().expect("lock"), ["new@1", "new@2"]);
}
