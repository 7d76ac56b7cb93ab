//! The relay (read the log, publish to JetStream, await the acknowledgements, commit the
//! checkpoint) against a raw loop that reads the same pages from PostgreSQL and publishes
//! them with async-nats, with the same subjects, payloads and headers, fully pipelined,
//! without checkpoints, leases or order guarantees; interleaved in the same run.
//!
//! Run with: `cargo bench -p annals-benches --bench relay` (PostgreSQL at `DATABASE_URL`,
//! NATS with JetStream at `NATS_URL`, default `nats://127.0.0.1:4222`; it creates and
//! deletes streams named `ANNALS_BENCH_*`).

use std::{
    future::IntoFuture,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use annals_benches::{bench_pool, interleave, print_interleaved, runtime, store};
use annals_core::{
    encode_event, Encoding, EventStore, ExpectedVersion, Metadata, Position, RecordedEvent,
    StreamAppend,
};
use annals_nats::{
    async_nats::jetstream,
    headers::{to_headers, Published},
    NatsOptions, Relay, RelayOptions, StreamSettings, SubjectRule,
};
use annals_projections::{PgCheckpoints, ProjectionEngine};
use annals_store_postgres::PgEventStore;
use bank::AccountEvent;
use futures_util::{stream::FuturesOrdered, StreamExt};
use sqlx::{PgPool, Row};

/// Events in the log, spread over this many streams.
const EVENTS: u64 = 10_000;
const STREAMS: u64 = 1_000;
const PAGE: i64 = 500;

fn nats() -> NatsOptions {
    NatsOptions::new(std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()))
        .name("annals-bench")
}

fn settings(n: u64) -> StreamSettings {
    StreamSettings {
        name: format!("ANNALS_BENCH_{n}"),
        prefix: format!("annals_bench_{n}"),
        ..StreamSettings::default()
    }
}

async fn fill(store: &PgEventStore) {
    for round in 0..EVENTS / 100 {
        let appends = (0..100)
            .map(|i| {
                let stream = format!("account-{}", (round * 100 + i) % STREAMS);
                let event = encode_event(
                    &AccountEvent::Deposited {
                        amount: i as i64 + 1,
                    },
                    Encoding::Json,
                )
                .expect("encode")
                .with_metadata(Metadata {
                    correlation_id: Some(uuid::Uuid::now_v7()),
                    ..Metadata::default()
                });
                StreamAppend::new(stream, ExpectedVersion::Any, vec![event])
            })
            .collect();
        store.append(appends).await.expect("fill");
    }
}

/// The relay, from a fresh checkpoint into a fresh stream, until it reached the head.
async fn annals(store: &PgEventStore, n: u64, head: Position, js: &jetstream::Context) -> Duration {
    let relay = Relay::new(
        format!("bench-relay-{n}"),
        nats(),
        RelayOptions::new().stream(settings(n)),
    );
    relay.connect().await.expect("relay connects");
    let engine = ProjectionEngine::new(store.clone(), PgCheckpoints::new(store)).subscribe(relay);
    let started = Instant::now();
    let running = engine.start();
    running
        .wait_until_caught_up(head, Duration::from_secs(600))
        .await
        .expect("caught up");
    let elapsed = started.elapsed();
    running.shutdown().await;
    let _ = js.delete_stream(settings(n).name).await;
    elapsed
}

/// The raw loop: pages of events by SQL, every message of a page published at once, the
/// page's acknowledgements awaited, next page.
async fn raw(pool: &PgPool, n: u64, js: &jetstream::Context) -> Duration {
    let settings = settings(n);
    js.create_stream(jetstream::stream::Config {
        name: settings.name.clone(),
        subjects: vec![settings.subjects()],
        duplicate_window: settings.duplicate_window,
        ..Default::default()
    })
    .await
    .expect("stream");
    let started = Instant::now();
    let mut after = 0i64;
    loop {
        let rows = sqlx::query(
            "SELECT global_position, transaction_id::text::bigint AS commit_id, event_id, stream_id, stream_version,
                    event_type, schema_version, recorded_at, metadata::text AS metadata, payload::text AS payload
             FROM relay.events WHERE global_position > $1 ORDER BY global_position LIMIT $2",
        )
        .bind(after)
        .bind(PAGE)
        .fetch_all(pool)
        .await
        .expect("page");
        let Some(last) = rows.last() else { break };
        after = last.get("global_position");
        let batch_end = Position::new(last.get::<i64, _>("commit_id") as u64, after as u64);
        let mut acks = FuturesOrdered::new();
        for row in &rows {
            let metadata: Option<String> = row.get("metadata");
            let payload: String = row.get("payload");
            let event = RecordedEvent {
                event_id: row.get("event_id"),
                stream_id: row.get("stream_id"),
                stream_version: row.get::<i64, _>("stream_version") as u64,
                position: Position::new(
                    row.get::<i64, _>("commit_id") as u64,
                    row.get::<i64, _>("global_position") as u64,
                ),
                event_type: row.get("event_type"),
                schema_version: row.get::<i32, _>("schema_version") as u32,
                recorded_at: row.get("recorded_at"),
                metadata: metadata
                    .map(|m| serde_json::from_str(&m).expect("metadata"))
                    .unwrap_or_default(),
                encoding: Encoding::Json,
                payload: payload.into_bytes(),
            };
            let subject = SubjectRule::Category
                .subject(&settings.prefix, &event)
                .expect("subject");
            let headers = to_headers(
                &event,
                &Published {
                    relay: "raw",
                    source: "annals://raw",
                    previous_version: event.stream_version - 1,
                    batch_end,
                    dataschema: None,
                    trace: None,
                },
            )
            .expect("headers");
            let ack = js
                .publish_with_headers(subject, headers, bytes::Bytes::from(event.payload))
                .await
                .expect("publish");
            acks.push_back(ack.into_future());
        }
        while let Some(ack) = acks.next().await {
            ack.expect("ack");
        }
    }
    let elapsed = started.elapsed();
    let _ = js.delete_stream(settings.name).await;
    elapsed
}

fn main() {
    let rt = runtime();
    let (store, pool, head, js) = rt.block_on(async {
        let pool = bench_pool().await;
        let store = store(&pool, "relay").await;
        fill(&store).await;
        let head = store.head().await.expect("head");
        let client = nats()
            .connect()
            .await
            .unwrap_or_else(|e| panic!("the relay bench needs NATS with JetStream: {e}"));
        (store, pool, head, jetstream::new(client))
    });
    let n = AtomicU64::new(0);
    let next = || n.fetch_add(1, Ordering::SeqCst);
    let rounds: usize = std::env::var("ANNALS_BENCH_RELAY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let results = rt.block_on(async {
        let relay = interleave(
            rounds,
            1,
            || {
                let n = next();
                let (store, js) = (&store, &js);
                async move {
                    let elapsed = annals(store, n, head, js).await;
                    println!("  annals relay: {EVENTS} events in {elapsed:?}");
                }
            },
            || {
                let n = next();
                let (pool, js) = (&pool, &js);
                async move {
                    let elapsed = raw(pool, n, js).await;
                    println!("  raw loop:     {EVENTS} events in {elapsed:?}");
                }
            },
        )
        .await;
        vec![("relay_10k_events_1k_streams", relay)]
    });
    print_interleaved(
        "the relay vs a raw read-and-publish loop (ratio: median round; 10,000 events each)",
        &results,
    );
}
