//! The inbox consumer against a real JetStream (its own server per test) and PostgreSQL,
//! with what a bus can do to it: messages that are not annals events, a relay that filters
//! by type (gaps in the versions on a subject), a stream whose first messages expired, a
//! handler that keeps failing under the halt policy.

mod common;

use std::time::{Duration, Instant};

use annals_core::{EventStore, ExpectedVersion};
use annals_nats::{InboxConsumer, InboxOptions, Relay, RelayOptions};
use annals_projections::{
    FailurePolicy, HandlerError, PgCheckpoints, PgTx, Projection, ProjectionEngine, RetryPolicy,
    RunningProjections, SubscriptionState,
};
use annals_store_postgres::{testkit::TestDatabase, PgEventStore};
use common::{append, fast, noted, relay_until, Ev, NatsServer};
use sqlx::Executor;

/// Records each applied event, with the order it was applied in; refuses `n == refuse`.
#[derive(Clone, Default)]
struct Applied {
    refuse: Option<u64>,
}

impl Projection<PgCheckpoints> for Applied {
    type Event = Ev;

    fn name(&self) -> &str {
        "applied"
    }

    async fn setup(&self, tx: &mut PgTx) -> Result<(), HandlerError> {
        tx.execute(
            "CREATE TABLE IF NOT EXISTS applied (
                 seq bigint GENERATED ALWAYS AS IDENTITY,
                 stream_id text NOT NULL, version bigint NOT NULL,
                 PRIMARY KEY (stream_id, version))",
        )
        .await?;
        Ok(())
    }

    async fn handle(
        &self,
        event: &annals_core::Envelope<Ev>,
        tx: &mut PgTx,
    ) -> Result<(), HandlerError> {
        if let (Ev::Noted { n }, Some(refused)) = (&event.payload, self.refuse) {
            if *n == refused {
                return Err(format!("refusing n = {n}").into());
            }
        }
        // A second application of an event fails on the primary key.
        sqlx::query("INSERT INTO applied (stream_id, version) VALUES ($1, $2)")
            .bind(&event.stream_id)
            .bind(event.stream_version as i64)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// Publishes the whole log up to `head` with a relay of every event.
async fn relay_all(store: &PgEventStore, nats: &NatsServer, head: annals_core::Position) {
    relay_until(
        store,
        Relay::new("relay", nats.options(), RelayOptions::new()),
        head,
    )
    .await;
}

fn options() -> InboxOptions {
    InboxOptions::new()
        .ack_wait(Duration::from_secs(2))
        .retry(RetryPolicy {
            attempts: 3,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
        })
}

fn consume(
    store: &PgEventStore,
    consumer: InboxConsumer<Applied>,
) -> RunningProjections<PgEventStore, PgCheckpoints> {
    ProjectionEngine::new(store.clone(), PgCheckpoints::new(store))
        .with_options(fast())
        .consume(consumer)
        .start()
}

/// The applied events per stream, in the order they were applied.
async fn applied(store: &PgEventStore) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT stream_id, version FROM applied ORDER BY seq")
        .fetch_all(store.pool())
        .await
        .unwrap_or_default()
}

async fn wait_for<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each stream's versions appear in increasing order.
fn assert_stream_order(rows: &[(String, i64)]) {
    let mut last = std::collections::HashMap::new();
    for (stream, version) in rows {
        let before = last.insert(stream.clone(), *version).unwrap_or(0);
        assert!(
            before < *version,
            "{stream}@{version} applied after @{before}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_an_annals_event_is_a_dead_letter_and_nothing_else_stops() {
    let nats = NatsServer::start().await;
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let (_, head) = append(&store, "account", 3, 30).await;
    relay_all(&store, &nats, head).await;
    // Someone else publishes on the relay's subjects.
    let client = nats.options().connect().await.expect("connect");
    let js = async_nats::jetstream::new(client);
    js.publish("annals.account.account-0", "not an event".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let (_, head) = append(&store, "account", 3, 30).await;
    relay_all(&store, &nats, head).await;

    let running = consume(
        &store,
        InboxConsumer::new("inbox", nats.options(), options(), Applied::default()),
    );
    wait_for("every event applied", || async {
        applied(&store).await.len() == 60
    })
    .await;
    let letters = running
        .engine()
        .dead_letters(Some("inbox"))
        .await
        .expect("letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(
        letters[0].error.contains("not an annals event") || letters[0].error.contains("header"),
        "{}",
        letters[0].error
    );
    assert!(letters[0].message.is_some(), "the letter keeps the message");
    // Retrying cannot make it an event: a typed error, and the letter stays.
    let retried = running.engine().retry_dead_letter(letters[0].id).await;
    assert!(retried.is_err());
    running
        .engine()
        .discard_dead_letter(letters[0].id)
        .await
        .expect("discard");
    assert_stream_order(&applied(&store).await);
    running.shutdown().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_left_by_a_type_filter_do_not_stall_a_stream() {
    let nats = NatsServer::start().await;
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    // Each stream alternates a published and an unpublished type.
    let mut last = annals_core::Position::START;
    for i in 0..40u64 {
        let stream = format!("account-{}", i % 4);
        let event = if i % 2 == 0 {
            noted(i)
        } else {
            annals_core::encode_event(&Ev::Skipped, annals_core::Encoding::Json).expect("encode")
        };
        last = store
            .append_to_stream(&stream, ExpectedVersion::Any, vec![event])
            .await
            .expect("append")
            .position;
    }
    let relay = Relay::new(
        "relay",
        nats.options(),
        RelayOptions::new().event_types(["noted"]),
    );
    relay_until(&store, relay, last).await;
    let running = consume(
        &store,
        InboxConsumer::new("inbox", nats.options(), options(), Applied::default()),
    );
    wait_for("the noted events", || async {
        applied(&store).await.len() == 20
    })
    .await;
    assert_stream_order(&applied(&store).await);
    running.shutdown().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_first_messages_expired_starts_at_the_first_one_kept() {
    let nats = NatsServer::start().await;
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let (_, head) = append(&store, "account", 1, 10).await;
    relay_all(&store, &nats, head).await;
    // The stream's limits dropped the first four messages of the subject.
    let client = nats.options().connect().await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("ANNALS").await.expect("stream");
    for sequence in 1..=4 {
        stream.delete_message(sequence).await.expect("delete");
    }
    let _ = stream.info().await;
    let running = consume(
        &store,
        InboxConsumer::new("inbox", nats.options(), options(), Applied::default()),
    );
    wait_for("versions 5 to 10", || async {
        applied(&store).await.len() == 6
    })
    .await;
    let rows = applied(&store).await;
    assert_eq!(rows.first().map(|r| r.1), Some(5), "{rows:?}");
    assert_stream_order(&rows);
    running.shutdown().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_halt_policy_stops_the_consumer_on_the_failing_event() {
    let nats = NatsServer::start().await;
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let (_, head) = append(&store, "account", 2, 20).await;
    relay_all(&store, &nats, head).await;
    let consumer = InboxConsumer::new(
        "inbox",
        nats.options(),
        options().on_failure(FailurePolicy::Halt),
        Applied { refuse: Some(7) },
    );
    let running = consume(&store, consumer);
    wait_for("the halt", || async {
        running
            .status()
            .await
            .is_ok_and(|s| s[0].state == SubscriptionState::Halted)
    })
    .await;
    let status = running.status().await.expect("status");
    assert!(
        status[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("refusing n = 7")),
        "{status:?}"
    );
    // Event 7 (account-1@4) and the later events of its stream were not applied; the
    // other stream may have gone on before the halt, in order.
    let rows = applied(&store).await;
    assert!(
        !rows.iter().any(|(s, v)| s == "account-1" && *v >= 4),
        "{rows:?}"
    );
    assert_stream_order(&rows);
    assert!(running
        .engine()
        .dead_letters(Some("inbox"))
        .await
        .expect("letters")
        .is_empty());
    running.shutdown().await;
    db.drop_database().await;
}

/// Old inbox rows are purged; a redelivery of everything afterwards (the durable consumer
/// deleted and created again) still applies nothing twice: the streams' versions remember.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_inbox_rows_do_not_let_a_redelivery_apply_twice() {
    let nats = NatsServer::start().await;
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let (_, head) = append(&store, "account", 3, 30).await;
    relay_all(&store, &nats, head).await;
    let running = consume(
        &store,
        InboxConsumer::new(
            "inbox",
            nats.options(),
            options().retention(Duration::from_millis(200)),
            Applied::default(),
        ),
    );
    wait_for("every event", || async {
        applied(&store).await.len() == 30
    })
    .await;
    let inbox_rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM annals.inbox")
            .fetch_one(store.pool())
            .await
            .expect("count")
    };
    wait_for("the purge", || async { inbox_rows().await == 0 }).await;

    // Everything again, from the start of the stream.
    let client = nats.options().connect().await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("ANNALS").await.expect("stream");
    stream
        .delete_consumer("inbox")
        .await
        .expect("delete the consumer");
    wait_for("the new consumer to deliver everything", || async {
        match stream.consumer_info("inbox").await {
            Ok(info) => {
                info.num_pending == 0
                    && info.num_ack_pending == 0
                    && info.delivered.stream_sequence >= 30
            }
            Err(_) => false,
        }
    })
    .await;
    assert_eq!(
        applied(&store).await.len(),
        30,
        "a redelivered event was applied again"
    );
    assert!(running
        .engine()
        .dead_letters(Some("inbox"))
        .await
        .expect("letters")
        .is_empty());
    running.shutdown().await;
    db.drop_database().await;
}
