//! annals on PostgreSQL against raw SQL doing the same work, in the same run.
//!
//! Run with: `cargo bench -p annals-benches --bench postgres`

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use annals_benches::{
    bench_pool, criterion_dir, interleave, print_interleaved, print_summary, raw_tables, runtime,
    store, Pair, Round,
};
use annals_core::{
    encode_event, Encoding, EventStore, ExpectedVersion, NewEvent, Position, Repository,
    RepositoryOptions, SnapshotStore,
};
use annals_projections::{PgCheckpoints, ProjectionEngine};
use annals_store_postgres::PgEventStore;
use bank::{
    balances::{account_id, AccountBalances, BalanceRow},
    AccountCommand, AccountEvent, BankAccount,
};
use criterion::{Criterion, Throughput};
use sqlx::{PgPool, Row};
use tokio::runtime::Runtime;

fn deposit(amount: i64) -> NewEvent {
    encode_event(&AccountEvent::Deposited { amount }, Encoding::Json).expect("encode")
}

const RAW_INSERT: &str =
    "INSERT INTO raw_events (event_id, stream_id, stream_version, event_type, payload)
                          VALUES ($1, $2, $3, $4, $5::jsonb)";

/// The baseline append: one event, one plain INSERT.
async fn raw_insert(pool: &PgPool, stream: &str, version: i64) {
    let event = deposit(1);
    sqlx::query(RAW_INSERT)
        .bind(event.event_id)
        .bind(stream)
        .bind(version)
        .bind(&event.event_type)
        .bind(std::str::from_utf8(&event.payload).expect("json"))
        .execute(pool)
        .await
        .expect("raw insert");
}

async fn annals_append(store: &PgEventStore, stream: &str, expected: u64) {
    store
        .append_to_stream(stream, ExpectedVersion::Exact(expected), vec![deposit(1)])
        .await
        .expect("append");
}

/// 1: one event per append, sequential, to one stream at its expected version.
fn append_one(c: &mut Criterion, rt: &Runtime, store: &PgEventStore, pool: &PgPool) {
    let mut group = c.benchmark_group("append_1");
    group.throughput(Throughput::Elements(1));
    let version = AtomicU64::new(0);
    group.bench_function("annals", |b| {
        b.to_async(rt).iter(|| async {
            annals_append(store, "seq", version.fetch_add(1, Ordering::SeqCst)).await;
        })
    });
    let raw_version = AtomicU64::new(0);
    group.bench_function("raw_sql", |b| {
        b.to_async(rt).iter(|| async {
            let v = raw_version.fetch_add(1, Ordering::SeqCst) + 1;
            raw_insert(pool, "seq", v as i64).await;
        })
    });
    group.finish();
}

/// Concurrent tasks in workload 2.
const TASKS: u64 = 8;

/// 2: the same from 8 concurrent tasks, each on its own stream.
fn append_concurrent(c: &mut Criterion, rt: &Runtime, store: &PgEventStore, pool: &PgPool) {
    let mut group = c.benchmark_group("append_1_x8");
    group.throughput(Throughput::Elements(TASKS));
    let round = AtomicU64::new(0);
    group.bench_function("annals", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let prefix = format!("conc-{}", round.fetch_add(1, Ordering::SeqCst));
            async move {
                let started = Instant::now();
                annals_append_x8(store, &prefix, iters).await;
                started.elapsed()
            }
        })
    });
    let raw_round = AtomicU64::new(0);
    group.bench_function("raw_sql", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let prefix = format!("conc-{}", raw_round.fetch_add(1, Ordering::SeqCst));
            async move {
                let started = Instant::now();
                raw_append_x8(pool, &prefix, iters).await;
                started.elapsed()
            }
        })
    });
    group.finish();
}

/// `TASKS` concurrent tasks, each appending `per_task` events one by one to its own stream.
async fn annals_append_x8(store: &PgEventStore, prefix: &str, per_task: u64) {
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = store.clone();
            let stream = format!("{prefix}-{t}");
            tokio::spawn(async move {
                for v in 0..per_task {
                    annals_append(&store, &stream, v).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
}

/// The baseline of [`annals_append_x8`].
async fn raw_append_x8(pool: &PgPool, prefix: &str, per_task: u64) {
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let pool = pool.clone();
            let stream = format!("{prefix}-{t}");
            tokio::spawn(async move {
                for v in 0..per_task {
                    raw_insert(&pool, &stream, v as i64 + 1).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
}

/// 3: batches of 100 events in one call vs one multi-row INSERT.
fn append_batch(c: &mut Criterion, rt: &Runtime, store: &PgEventStore, pool: &PgPool) {
    let mut group = c.benchmark_group("append_100");
    group.throughput(Throughput::Elements(100));
    let n = AtomicU64::new(0);
    group.bench_function("annals", |b| {
        b.to_async(rt).iter(|| async {
            annals_batch(
                store,
                &format!("batch-{}", n.fetch_add(1, Ordering::SeqCst)),
            )
            .await;
        })
    });
    let raw_n = AtomicU64::new(0);
    group.bench_function("raw_sql", |b| {
        b.to_async(rt).iter(|| async {
            raw_batch(
                pool,
                &format!("batch-{}", raw_n.fetch_add(1, Ordering::SeqCst)),
            )
            .await;
        })
    });
    group.finish();
}

async fn annals_batch(store: &PgEventStore, stream: &str) {
    let events = (0..100).map(deposit).collect();
    store
        .append_to_stream(stream, ExpectedVersion::NoStream, events)
        .await
        .expect("append");
}

async fn raw_batch(pool: &PgPool, stream: &str) {
    let events: Vec<NewEvent> = (0..100).map(deposit).collect();
    sqlx::query(
        "INSERT INTO raw_events (event_id, stream_id, stream_version, event_type, payload)
         SELECT id, $2, v, t, p::jsonb
         FROM unnest($1::uuid[], $3::bigint[], $4::text[], $5::text[]) AS u (id, v, t, p)",
    )
    .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
    .bind(stream)
    .bind((1..=100i64).collect::<Vec<_>>())
    .bind(
        events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| std::str::from_utf8(&e.payload).expect("json"))
            .collect::<Vec<_>>(),
    )
    .execute(pool)
    .await
    .expect("raw batch");
}

/// 4: commands through the repository, on fresh aggregates and on one hot aggregate; the
/// baseline is the physical minimum of a command: one read of the stream's tail and one
/// INSERT.
fn commands(c: &mut Criterion, rt: &Runtime, store: &PgEventStore, pool: &PgPool) {
    let mut group = c.benchmark_group("command");
    group.throughput(Throughput::Elements(1));
    let accounts = Repository::<BankAccount, _>::new(store.clone());
    let n = AtomicU64::new(0);
    group.bench_function("annals_fresh", |b| {
        b.to_async(rt).iter(|| async {
            annals_fresh(
                &accounts,
                &format!("fresh-{}", n.fetch_add(1, Ordering::SeqCst)),
            )
            .await;
        })
    });
    rt.block_on(async {
        let open = AccountCommand::Open {
            owner: "Hot".into(),
            currency: "EUR".into(),
        };
        accounts.execute("hot", open).await.expect("open hot");
        for _ in 0..2_000 {
            accounts
                .execute("hot", AccountCommand::Deposit { amount: 1 })
                .await
                .expect("warm hot");
        }
    });
    group.bench_function("annals_hot", |b| {
        b.to_async(rt).iter(|| async {
            accounts
                .execute("hot", AccountCommand::Deposit { amount: 1 })
                .await
                .expect("deposit");
        })
    });
    // The same hot aggregate through a repository with the aggregate cache: no load.
    let cached = Repository::<BankAccount, _>::new(store.clone()).with_cache(1_024);
    group.bench_function("annals_hot_cached", |b| {
        b.to_async(rt).iter(|| async {
            cached
                .execute("hot", AccountCommand::Deposit { amount: 1 })
                .await
                .expect("deposit");
        })
    });
    let raw_version = AtomicU64::new(0);
    group.bench_function("raw_sql", |b| {
        b.to_async(rt).iter(|| async {
            raw_command(pool, "cmd", raw_version.fetch_add(1, Ordering::SeqCst)).await;
        })
    });
    group.finish();
}

async fn annals_fresh(accounts: &Repository<BankAccount, PgEventStore>, id: &str) {
    let open = AccountCommand::Open {
        owner: "Ada".into(),
        currency: "EUR".into(),
    };
    accounts.execute(id, open).await.expect("open");
}

/// A command's physical minimum: read the stream's tail (empty), insert one event.
async fn raw_command(pool: &PgPool, stream: &str, version: u64) {
    let v = version as i64;
    let tail = sqlx::query(
        "SELECT payload::text FROM raw_events WHERE stream_id = $1 AND stream_version > $2",
    )
    .bind(stream)
    .bind(v)
    .fetch_all(pool)
    .await
    .expect("raw load");
    assert!(tail.is_empty());
    raw_insert(pool, stream, v + 1).await;
}

/// 5: loading a 10,000-event aggregate with and without a snapshot, and a 10-event one.
fn load(c: &mut Criterion, rt: &Runtime, store: &PgEventStore) {
    let plain = Repository::<BankAccount, _>::new(store.clone())
        .with_options(RepositoryOptions::default().snapshot_every(None));
    rt.block_on(async {
        let opened = encode_event(
            &AccountEvent::Opened {
                owner: "Big".into(),
                currency: "EUR".into(),
            },
            Encoding::Json,
        )
        .expect("encode");
        for id in ["big", "big-snap"] {
            let stream = format!("account-{id}");
            let mut opened = opened.clone();
            opened.event_id = uuid::Uuid::now_v7();
            store
                .append_to_stream(&stream, ExpectedVersion::NoStream, vec![opened])
                .await
                .expect("open");
            for _ in 0..10 {
                let events: Vec<NewEvent> = (0..999).map(|_| deposit(1)).collect();
                store
                    .append_to_stream(&stream, ExpectedVersion::Any, events)
                    .await
                    .expect("fill");
            }
        }
        let small = "account-small";
        store
            .append_to_stream(
                small,
                ExpectedVersion::NoStream,
                vec![{
                    let mut e = opened.clone();
                    e.event_id = uuid::Uuid::now_v7();
                    e
                }],
            )
            .await
            .expect("open small");
        store
            .append_to_stream(small, ExpectedVersion::Any, (0..9).map(deposit).collect())
            .await
            .expect("small");
        let loaded = plain.load("big-snap").await.expect("load");
        store
            .save_snapshot(annals_core::Snapshot {
                stream_id: "account-big-snap".into(),
                aggregate_type: "account".into(),
                schema_version: 1,
                stream_version: loaded.version,
                encoding: Encoding::Postcard,
                payload: Encoding::Postcard.encode(&loaded.state).expect("snapshot"),
                taken_at: chrono_now(),
            })
            .await
            .expect("save snapshot");
    });
    let mut group = c.benchmark_group("load");
    group.throughput(Throughput::Elements(1));
    for (name, id) in [
        ("10k_events", "big"),
        ("10k_with_snapshot", "big-snap"),
        ("10_events", "small"),
    ] {
        group.bench_function(name, |b| {
            b.to_async(rt).iter(|| async {
                let loaded = plain.load(id).await.expect("load");
                assert!(loaded.version >= 10);
            })
        });
    }
    group.finish();
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// 6: projection catch-up over 100,000 events into a read table, against reading pages
/// and upserting the same rows with plain SQL (no checkpoint, no leases, no fencing).
fn catch_up(c: &mut Criterion, rt: &Runtime, pool: &PgPool) {
    const EVENTS: u64 = 100_000;
    let store = rt.block_on(async {
        let store = store(pool, "catchup").await;
        for batch in 0..(EVENTS / 1_000) {
            let stream = format!("account-c{}", batch % 1_000);
            let events: Vec<NewEvent> = (0..1_000).map(|i| deposit(i % 97 + 1)).collect();
            store
                .append_to_stream(&stream, ExpectedVersion::Any, events)
                .await
                .expect("fill");
        }
        store
    });
    let engine = ProjectionEngine::new(store.clone(), PgCheckpoints::new(&store))
        .with_options(annals_projections::EngineOptions::default().batch_size(5_000))
        .register(AccountBalances::default());
    let mut group = c.benchmark_group("catch_up_100k");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(10);
    group.bench_function("annals", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let (engine, store) = (engine.clone(), store.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    engine.reset("account_balances").await.ok();
                    let head = store.head().await.expect("head");
                    let started = Instant::now();
                    let running = engine.start();
                    running
                        .wait_until_caught_up(head, Duration::from_secs(600))
                        .await
                        .expect("caught up");
                    total += started.elapsed();
                    running.shutdown().await;
                }
                total
            }
        })
    });
    group.bench_function("raw_sql", |b| {
        b.to_async(rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                sqlx::query("TRUNCATE raw_balances")
                    .execute(pool)
                    .await
                    .expect("truncate");
                let started = Instant::now();
                raw_catch_up(pool).await;
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
}

async fn raw_catch_up(pool: &PgPool) {
    let mut after = 0i64;
    loop {
        let rows = sqlx::query(
            "SELECT global_position, stream_id, event_type, payload::text AS payload, recorded_at
             FROM catchup.events WHERE global_position > $1 ORDER BY global_position LIMIT 5000",
        )
        .bind(after)
        .fetch_all(pool)
        .await
        .expect("page");
        let Some(last) = rows.last() else { break };
        after = last.get("global_position");
        let mut tx = pool.begin().await.expect("begin");
        let mut balances = std::collections::BTreeMap::<String, BalanceRow>::new();
        for row in &rows {
            let stream: String = row.get("stream_id");
            let event_type: String = row.get("event_type");
            let payload: String = row.get("payload");
            let event: AccountEvent = serde_json::from_str(&format!(
                "{{{}:{payload}}}",
                serde_json::to_string(&event_type).expect("tag")
            ))
            .expect("decode");
            let envelope = annals_core::Envelope {
                event_id: uuid::Uuid::nil(),
                stream_id: stream.clone(),
                stream_version: 0,
                position: Position::START,
                event_type,
                schema_version: 1,
                recorded_at: row.get("recorded_at"),
                metadata: Default::default(),
                payload: event,
            };
            balances
                .entry(account_id(&stream).to_owned())
                .or_default()
                .apply(&envelope);
        }
        let (ids, rows): (Vec<String>, Vec<BalanceRow>) = balances.into_iter().unzip();
        sqlx::query(
            "INSERT INTO raw_balances AS b (account_id, owner, currency, balance, status, last_activity, events_applied)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::timestamptz[], $7::bigint[])
             ON CONFLICT (account_id) DO UPDATE
             SET balance = b.balance + excluded.balance, events_applied = b.events_applied + excluded.events_applied,
                 last_activity = excluded.last_activity",
        )
        .bind(&ids)
        .bind(rows.iter().map(|r| r.owner.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.currency.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.balance).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.last_activity).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.events_applied).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .expect("upsert");
        tx.commit().await.expect("commit");
    }
}

/// Workloads 1-4a again, annals and baseline in alternating blocks (see [`interleave`]):
/// back-to-back criterion runs moved these ratios by up to 0.2 on a shared machine.
fn interleaved(
    rt: &Runtime,
    store: &PgEventStore,
    pool: &PgPool,
    pinged: &PgEventStore,
) -> Vec<(&'static str, Vec<Round>)> {
    let accounts = Repository::<BankAccount, _>::new(store.clone());
    let accounts = &accounts;
    let n = AtomicU64::new(0);
    let next = || n.fetch_add(1, Ordering::SeqCst);
    let (ours, raw) = (AtomicU64::new(0), AtomicU64::new(0));
    rt.block_on(async {
        let append_1 = interleave(
            40,
            50,
            || annals_append(store, "il-seq", ours.fetch_add(1, Ordering::SeqCst)),
            || {
                raw_insert(
                    pool,
                    "il-seq",
                    raw.fetch_add(1, Ordering::SeqCst) as i64 + 1,
                )
            },
        )
        .await;
        let append_x8 = interleave(
            30,
            1,
            || {
                let prefix = format!("il-conc-{}", next());
                async move { annals_append_x8(store, &prefix, 10).await }
            },
            || {
                let prefix = format!("il-conc-{}", next());
                async move { raw_append_x8(pool, &prefix, 10).await }
            },
        )
        .await;
        let append_100 = interleave(
            40,
            5,
            || {
                let stream = format!("il-batch-{}", next());
                async move { annals_batch(store, &stream).await }
            },
            || {
                let stream = format!("il-batch-{}", next());
                async move { raw_batch(pool, &stream).await }
            },
        )
        .await;
        let raw_cmd = AtomicU64::new(0);
        let fresh = interleave(
            40,
            25,
            || {
                let id = format!("il-fresh-{}", next());
                async move { annals_fresh(accounts, &id).await }
            },
            || raw_command(pool, "il-cmd", raw_cmd.fetch_add(1, Ordering::SeqCst)),
        )
        .await;
        // The cost of sqlx's ping on acquire: the same appends through the bench's pool
        // (no ping, as PgEventStore::connect builds it) against one that pings (the
        // "baseline" side).
        let (a, b) = (AtomicU64::new(0), AtomicU64::new(0));
        let ping = interleave(
            40,
            50,
            || annals_append(store, "il-noping", a.fetch_add(1, Ordering::SeqCst)),
            || annals_append(pinged, "il-ping", b.fetch_add(1, Ordering::SeqCst)),
        )
        .await;
        // The same for a cheap read (the log's head), where a round trip weighs more.
        let ping_read = interleave(
            40,
            200,
            || async {
                store.head().await.expect("head");
            },
            || async {
                pinged.head().await.expect("head");
            },
        )
        .await;
        vec![
            ("append_1", append_1),
            ("append_1, no ping vs ping", ping),
            ("head(), no ping vs ping", ping_read),
            ("append_1_x8", append_x8),
            ("append_100", append_100),
            ("command/annals_fresh", fresh),
        ]
    })
}

fn main() {
    let rt = runtime();
    let pool = rt.block_on(bench_pool());
    let store = rt.block_on(async {
        raw_tables(&pool).await;
        store(&pool, "annals").await
    });
    // The same database through a pool that pings each connection as it hands it out
    // (sqlx's default test_before_acquire), for the ping's row in the interleaved table.
    let pinged = rt.block_on(async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(24)
            .connect_with(pool.connect_options().as_ref().clone())
            .await
            .expect("a pool with ping");
        PgEventStore::with_options(
            pool,
            annals_store_postgres::PgStoreOptions::new().schema("annals"),
        )
        .expect("schema")
    });
    let mut c = Criterion::default()
        .configure_from_args()
        .output_directory(&criterion_dir())
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    append_one(&mut c, &rt, &store, &pool);
    append_concurrent(&mut c, &rt, &store, &pool);
    append_batch(&mut c, &rt, &store, &pool);
    commands(&mut c, &rt, &store, &pool);
    load(&mut c, &rt, &store);
    catch_up(&mut c, &rt, &pool);
    c.final_summary();
    print_summary(
        "annals on PostgreSQL vs raw SQL (same run)",
        &[
            Pair {
                group: "append_1",
                annals: "annals",
                baseline: Some("raw_sql"),
                events: 1,
            },
            Pair {
                group: "append_1_x8",
                annals: "annals",
                baseline: Some("raw_sql"),
                events: 8,
            },
            Pair {
                group: "append_100",
                annals: "annals",
                baseline: Some("raw_sql"),
                events: 100,
            },
            Pair {
                group: "command",
                annals: "annals_fresh",
                baseline: Some("raw_sql"),
                events: 1,
            },
            Pair {
                group: "command",
                annals: "annals_hot",
                baseline: Some("raw_sql"),
                events: 1,
            },
            Pair {
                group: "load",
                annals: "10k_events",
                baseline: Some("10_events"),
                events: 1,
            },
            Pair {
                group: "load",
                annals: "10k_with_snapshot",
                baseline: Some("10_events"),
                events: 1,
            },
            Pair {
                group: "catch_up_100k",
                annals: "annals",
                baseline: Some("raw_sql"),
                events: 100_000,
            },
        ],
    );
    if std::env::var("ANNALS_BENCH_INTERLEAVED").map_or(true, |v| v != "0") {
        print_interleaved(
            "the same, annals and baseline in alternating blocks (ratio: median round)",
            &interleaved(&rt, &store, &pool, &pinged),
        );
    }
}
