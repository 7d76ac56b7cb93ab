//! The relay under faults, against its own JetStream server and a real PostgreSQL log: the
//! relay killed at random points while writers append, the server killed and restarted, a
//! relay killed between the broker's acknowledgement and the checkpoint and restarted past
//! the duplicate window, and events that cannot be published. Every event must be on the
//! bus exactly once, each subject in version order.
//!
//! `ANNALS_TORTURE_ROUNDS` raises the number of kills (default 20, about a minute here).

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use annals_core::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamAppend};
use annals_nats::{Relay, RelayOptions, StreamSettings, SubjectRule};
use annals_projections::{
    Checkpoints, Failure, PgCheckpoints, ProjectionEngine, RetryPolicy, Subscriber,
    SubscriptionState,
};
use annals_store_postgres::{
    testkit::{settled_head, TestDatabase},
    PgEventStore,
};
use common::{append, assert_exactly_once_in_order, bus, fast, noted, relay_until, NatsServer};

const WAIT: Duration = Duration::from_secs(90);

fn rounds() -> u64 {
    std::env::var("ANNALS_TORTURE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

fn settings(window: Duration) -> RelayOptions {
    RelayOptions::new().stream(StreamSettings {
        duplicate_window: window,
        ..StreamSettings::default()
    })
}

/// Writers appending (single events, batches, two streams at once) until stopped; returns
/// every event id they got acknowledged.
fn writers(store: PgEventStore, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<uuid::Uuid>> {
    tokio::spawn(async move {
        let mut ids = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let stream = format!("account-w{}", i % 17);
            let appends = match i % 5 {
                0 => vec![
                    StreamAppend::new(stream, ExpectedVersion::Any, vec![noted(i)]),
                    StreamAppend::new(
                        format!("order-w{}", i % 5),
                        ExpectedVersion::Any,
                        vec![noted(i)],
                    ),
                ],
                1 => vec![StreamAppend::new(
                    stream,
                    ExpectedVersion::Any,
                    vec![noted(i), noted(i), noted(i)],
                )],
                _ => vec![StreamAppend::new(
                    stream,
                    ExpectedVersion::Any,
                    vec![noted(i)],
                )],
            };
            let batch: Vec<uuid::Uuid> = appends
                .iter()
                .flat_map(|a| a.events.iter().map(|e| e.event_id))
                .collect();
            store.append(appends).await.expect("writer append");
            ids.extend(batch);
            i += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        ids
    })
}

/// The relay killed at random points (a fresh relay each time, so its NATS connection closes
/// as a crashed process's would) while writers append, with a duplicate window so short that
/// JetStream's deduplication cannot hide a republished batch: the relay's own look-ups must.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_killed_at_random_points_publishes_every_event_once_in_order() {
    let nats = NatsServer::start().await;
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let (mut ids, _) = append(&store, "account", 13, 400).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writing = writers(store.clone(), stop.clone());
    let engine = |relay: Relay| {
        ProjectionEngine::new(store.clone(), PgCheckpoints::new(&store))
            .with_options(fast())
            .subscribe(relay)
    };
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for round in 0..rounds() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let relay = Relay::new(
            "relay",
            nats.options(),
            settings(Duration::from_millis(100)),
        );
        let running = engine(relay).start();
        tokio::time::sleep(Duration::from_millis(30 + seed % 300)).await;
        running.abort().await;
        if round % 3 == 0 {
            // Past the duplicate window before the next relay starts.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    ids.extend(writing.await.expect("writers"));
    let relay = Relay::new(
        "relay",
        nats.options(),
        settings(Duration::from_millis(100)),
    );
    let running = engine(relay).start();
    let head = settled_head(&store).await;
    running
        .wait_until_caught_up(head, WAIT)
        .await
        .expect("caught up");
    running.shutdown().await;
    let on_bus = bus(&nats.options(), "ANNALS").await;
    assert_exactly_once_in_order(&on_bus, &ids);
    println!(
        "{} events on the bus after {} kills",
        on_bus.len(),
        rounds()
    );
    db.drop_database().await;
}

/// The server is down when the relay starts, comes up, is killed mid-stream and restarted
/// (same port, same store): the relay recovers by itself each time, and nothing is lost,
/// duplicated, dead-lettered or halted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_rides_out_a_server_that_dies_and_comes_back() {
    let mut nats = NatsServer::start().await;
    nats.kill();
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let (mut ids, _) = append(&store, "account", 9, 200).await;
    let relay = Relay::new("relay", nats.options(), RelayOptions::new());
    let engine = ProjectionEngine::new(store.clone(), PgCheckpoints::new(&store))
        .with_options(fast())
        .subscribe(relay);
    let running = engine.start();
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.restart().await;
    let stop = Arc::new(AtomicBool::new(false));
    let writing = writers(store.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(700)).await;
    nats.restart().await; // SIGKILL mid-stream, then up again
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.restart().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    ids.extend(writing.await.expect("writers"));
    let head = settled_head(&store).await;
    running
        .wait_until_caught_up(head, WAIT)
        .await
        .expect("the relay recovered");
    let status = running.status().await.expect("status");
    assert_eq!(status[0].state, SubscriptionState::Running);
    assert_eq!(status[0].dead_letters, 0, "an outage dead-lettered events");
    running.shutdown().await;
    assert_exactly_once_in_order(&bus(&nats.options(), "ANNALS").await, &ids);
    db.drop_database().await;
}

/// Delivers through a relay, then holds the batch open (before its checkpoint commits)
/// and says so: the moment to kill it.
#[derive(Clone)]
struct HoldAfterPublish {
    relay: Relay,
    delivered: Arc<tokio::sync::Notify>,
}

impl<C: Checkpoints> Subscriber<C> for HoldAfterPublish {
    fn name(&self) -> &str {
        <Relay as Subscriber<C>>::name(&self.relay)
    }
    fn kind(&self) -> &'static str {
        "relay"
    }
    fn event_types(&self) -> Option<Vec<String>> {
        None
    }
    async fn setup(&self, tx: &mut C::Tx) -> Result<(), Failure> {
        <Relay as Subscriber<C>>::setup(&self.relay, tx).await
    }
    async fn deliver(&self, events: &[RecordedEvent]) -> Result<(), Failure> {
        <Relay as Subscriber<C>>::deliver(&self.relay, events).await?;
        self.delivered.notify_one();
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(())
    }
}

/// A relay killed after JetStream stored a batch and before its checkpoint committed, and
/// restarted after the 1 s duplicate window has passed, publishes none of it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_restarted_past_the_duplicate_window_publishes_nothing_twice() {
    let nats = NatsServer::start().await;
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let (ids, head) = append(&store, "account", 5, 60).await;
    let options = || settings(Duration::from_secs(1));
    let holding = HoldAfterPublish {
        relay: Relay::new("relay", nats.options(), options()),
        delivered: Arc::new(tokio::sync::Notify::new()),
    };
    let running = ProjectionEngine::new(store.clone(), PgCheckpoints::new(&store))
        .with_options(fast().batch_size(1_000))
        .subscribe(holding.clone())
        .start();
    tokio::time::timeout(WAIT, holding.delivered.notified())
        .await
        .expect("the batch was published");
    running.abort().await;
    let before = bus(&nats.options(), "ANNALS").await;
    assert_eq!(
        before.len(),
        60,
        "the whole batch is on the bus, uncommitted"
    );
    let checkpoint = PgCheckpoints::new(&store)
        .checkpoint("relay")
        .await
        .expect("checkpoint");
    assert!(
        checkpoint.is_none(),
        "the checkpoint moved: the kill came too late"
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    relay_until(&store, Relay::new("relay", nats.options(), options()), head).await;
    assert_exactly_once_in_order(&bus(&nats.options(), "ANNALS").await, &ids);
    db.drop_database().await;
}

/// Events that can never be published (over the server's payload limit, or without a valid
/// subject) are dead-lettered with the reason, their streams parked behind them, and the
/// rest of the log goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublishable_events_are_dead_lettered_and_park_their_stream() {
    let nats = NatsServer::start_with(Some("max_payload: 4096\n"), &[]).await;
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let big = NewEvent::new(
        "noted",
        1,
        annals_core::Encoding::Json,
        format!(r#"{{"n":1,"blob":"{}"}}"#, "x".repeat(10_000)).into_bytes(),
    );
    let (mut ids, _) = append(&store, "account", 3, 10).await;
    store
        .append_to_stream("account-big", ExpectedVersion::NoStream, vec![big])
        .await
        .expect("append");
    store
        .append_to_stream("account-big", ExpectedVersion::Exact(1), vec![noted(2)])
        .await
        .expect("append");
    store
        .append_to_stream("account-bad", ExpectedVersion::NoStream, vec![noted(3)])
        .await
        .expect("append");
    let (more, head) = append(&store, "account", 3, 10).await;
    ids.extend(more);
    let rule = SubjectRule::Custom(Arc::new(|e: &RecordedEvent| {
        if e.stream_id == "account-bad" {
            "not a valid.subject".to_owned()
        } else {
            format!(
                "{}.{}",
                annals_nats::category(&e.stream_id),
                annals_nats::encode_token(&e.stream_id)
            )
        }
    }));
    let relay = Relay::new(
        "relay",
        nats.options(),
        RelayOptions::new().subject(rule).retry(RetryPolicy {
            attempts: 2,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(10),
        }),
    );
    let engine = ProjectionEngine::new(store.clone(), PgCheckpoints::new(&store))
        .with_options(fast())
        .subscribe(relay);
    let running = engine.start();
    running
        .wait_until_caught_up(head, WAIT)
        .await
        .expect("caught up past them");
    let letters = engine.dead_letters(Some("relay")).await.expect("letters");
    let summary: Vec<(String, u64, u32)> = letters
        .iter()
        .map(|d| (d.stream_id.clone(), d.stream_version, d.attempts))
        .collect();
    assert_eq!(
        summary,
        [
            ("account-big".to_owned(), 1, 1),
            ("account-big".to_owned(), 2, 0),
            ("account-bad".to_owned(), 1, 1)
        ],
        "{letters:?}"
    );
    assert!(
        letters[0].error.contains("max_payload"),
        "{}",
        letters[0].error
    );
    assert!(letters[1].error.contains("parked"), "{}", letters[1].error);
    assert!(letters[2].error.contains("subject"), "{}", letters[2].error);
    running.shutdown().await;
    assert_exactly_once_in_order(&bus(&nats.options(), "ANNALS").await, &ids);
    db.drop_database().await;
}
