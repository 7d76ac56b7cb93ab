//! The inbox consumer (inbox rows, per-stream order, double acks) against the same consumer
//! without an inbox: a pull loop that runs the same upsert per message in one transaction
//! per batch and acknowledges each message, interleaved in the same run, on 10,000 events
//! of 1,000 streams that a relay published once.
//!
//! Run with: `cargo bench -p annals-benches --bench inbox` (PostgreSQL at `DATABASE_URL`,
//! NATS with JetStream at `NATS_URL`, default `nats://127.0.0.1:4222`; it creates and
//! deletes the stream `ANNALS_INBOX_BENCH`). `ANNALS_BENCH_INBOX_ROUNDS` sets the rounds.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use annals_benches::{bench_pool, print_interleaved, runtime, store, Round};
use annals_core::{encode_event, Encoding, Envelope, EventStore, ExpectedVersion, StreamAppend};
use annals_nats::{
    async_nats::jetstream::{self, consumer::pull, AckKind},
    InboxConsumer, InboxOptions, NatsOptions, Relay, RelayOptions, StreamSettings,
};
use annals_projections::{HandlerError, PgCheckpoints, PgTx, Projection, ProjectionEngine};
use annals_store_postgres::PgEventStore;
use bank::AccountEvent;
use futures_util::StreamExt;
use sqlx::{Executor, PgPool};

const EVENTS: u64 = 10_000;
const STREAMS: u64 = 1_000;
const BATCH: usize = 100;
const STREAM: &str = "ANNALS_INBOX_BENCH";
const UPSERT: &str = "INSERT INTO inbox_bench (stream_id, n) VALUES ($1, 1)
                      ON CONFLICT (stream_id) DO UPDATE SET n = inbox_bench.n + 1";

fn nats() -> NatsOptions {
    NatsOptions::new(std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()))
        .name("annals-bench")
}

/// The read model both sides keep: one counter per stream.
struct Counters;

impl Projection<PgCheckpoints> for Counters {
    type Event = AccountEvent;

    fn name(&self) -> &str {
        "inbox_bench"
    }

    async fn handle(
        &self,
        event: &Envelope<AccountEvent>,
        tx: &mut PgTx,
    ) -> Result<(), HandlerError> {
        sqlx::query(UPSERT)
            .bind(&event.stream_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

async fn fill(store: &PgEventStore) {
    for round in 0..EVENTS / 100 {
        let appends = (0..100)
            .map(|i| {
                let stream = format!("account-{}", (round * 100 + i) % STREAMS);
                let event = encode_event(&AccountEvent::Deposited { amount: 1 }, Encoding::Json)
                    .expect("encode");
                StreamAppend::new(stream, ExpectedVersion::Any, vec![event])
            })
            .collect();
        store.append(appends).await.expect("fill");
    }
}

async fn reset_table(pool: &PgPool) {
    pool.execute(
        "DROP TABLE IF EXISTS inbox_bench; CREATE TABLE inbox_bench (stream_id text PRIMARY KEY, n bigint NOT NULL)",
    )
    .await
    .expect("table");
}

/// The inbox consumer from a fresh durable consumer until every message is applied.
async fn annals(store: &PgEventStore, pool: &PgPool, n: u64) -> Duration {
    reset_table(pool).await;
    let name = format!("inbox-bench-{n}");
    let consumer = InboxConsumer::new(
        name.clone(),
        nats(),
        InboxOptions::new()
            .stream(STREAM)
            .filter_subject("annals_inbox_bench.>")
            .batch(BATCH),
        Counters,
    );
    consumer.connect().await.expect("consumer");
    let started = Instant::now();
    let running = ProjectionEngine::new(store.clone(), PgCheckpoints::new(store))
        .consume(consumer)
        .start();
    loop {
        let applied: i64 =
            sqlx::query_scalar("SELECT coalesce(sum(n), 0)::bigint FROM inbox_bench")
                .fetch_one(pool)
                .await
                .expect("count");
        if applied as u64 >= EVENTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    running.shutdown().await;
    let js = jetstream::new(nats().connect().await.expect("connect"));
    let stream = js.get_stream(STREAM).await.expect("stream");
    let _ = stream.delete_consumer(&name).await;
    elapsed
}

/// The same consumer without the inbox: a batch's upserts in one transaction, then a plain
/// acknowledgement per message.
async fn raw(pool: &PgPool, js: &jetstream::Context, n: u64) -> Duration {
    reset_table(pool).await;
    let name = format!("raw-bench-{n}");
    let stream = js.get_stream(STREAM).await.expect("stream");
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: "annals_inbox_bench.>".into(),
                ..Default::default()
            },
        )
        .await
        .expect("consumer");
    let started = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(BATCH)
        .messages()
        .await
        .expect("messages");
    let mut done = 0;
    while done < EVENTS {
        let mut batch = Vec::with_capacity(BATCH);
        if let Some(message) = messages.next().await {
            batch.push(message.expect("message"));
        }
        while batch.len() < BATCH {
            match futures_util::FutureExt::now_or_never(messages.next()) {
                Some(Some(message)) => batch.push(message.expect("message")),
                _ => break,
            }
        }
        let mut tx = pool.begin().await.expect("begin");
        for message in &batch {
            let stream_id = message
                .headers
                .as_ref()
                .and_then(|h| h.get(annals_nats::headers::STREAM_ID))
                .map(|v| v.as_str().to_owned())
                .expect("stream id header");
            sqlx::query(UPSERT)
                .bind(stream_id)
                .execute(&mut *tx)
                .await
                .expect("upsert");
        }
        tx.commit().await.expect("commit");
        for message in &batch {
            message.ack_with(AckKind::Ack).await.expect("ack");
        }
        done += batch.len() as u64;
    }
    let elapsed = started.elapsed();
    let _ = stream.delete_consumer(&name).await;
    elapsed
}

fn main() {
    let rt = runtime();
    let (store, pool, js) = rt.block_on(async {
        let pool = bench_pool().await;
        let store = store(&pool, "inbox").await;
        fill(&store).await;
        let client = nats()
            .connect()
            .await
            .unwrap_or_else(|e| panic!("the inbox bench needs NATS with JetStream: {e}"));
        let js = jetstream::new(client);
        let _ = js.delete_stream(STREAM).await;
        let settings = StreamSettings {
            name: STREAM.to_owned(),
            prefix: "annals_inbox_bench".to_owned(),
            ..StreamSettings::default()
        };
        let relay = Relay::new(
            "inbox-bench-relay",
            nats(),
            RelayOptions::new().stream(settings),
        );
        relay.connect().await.expect("relay");
        let head = store.head().await.expect("head");
        let running = ProjectionEngine::new(store.clone(), PgCheckpoints::new(&store))
            .subscribe(relay)
            .start();
        running
            .wait_until_caught_up(head, Duration::from_secs(300))
            .await
            .expect("relayed");
        running.shutdown().await;
        (store, pool, js)
    });
    let rounds: usize = std::env::var("ANNALS_BENCH_INBOX_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let n = AtomicU64::new(0);
    let next = || n.fetch_add(1, Ordering::SeqCst);
    // Each side reports the time from its first pull to its last commit (setup and
    // teardown of the durable consumers are left out), alternating which goes first.
    let results: Vec<Round> = rt.block_on(async {
        let mut results = Vec::new();
        for round in 0..rounds {
            let (ours, base) = if round % 2 == 0 {
                let ours = annals(&store, &pool, next()).await;
                (ours, raw(&pool, &js, next()).await)
            } else {
                let base = raw(&pool, &js, next()).await;
                (annals(&store, &pool, next()).await, base)
            };
            println!("  inbox consumer: {EVENTS} events in {ours:?}; without inbox: {base:?}");
            results.push(Round {
                annals: ours,
                baseline: base,
                calls: 1,
            });
        }
        results
    });
    print_interleaved(
        "the inbox consumer vs the same consumer without an inbox (ratio: median round; 10,000 events each)",
        &[("inbox_10k_events_1k_streams", results)],
    );
    rt.block_on(async {
        let _ = js.delete_stream(STREAM).await;
    });
}
