//! annals next to cqrs-es + postgres-es and esrs, same BankAccount, same database, same run:
//! fresh-aggregate commands (sequential and from 8 tasks), commands on a hot aggregate with
//! 2,000+ events, and loading a 10,000-event aggregate.
//!
//! Run with: `cargo bench --manifest-path benches/peers/Cargo.toml` (PostgreSQL at
//! `DATABASE_URL`, default `postgres://root@127.0.0.1:5432/test`; creates `annals_peers`).

use std::{
    str::FromStr,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use annals_benches::{interleave, print_interleaved, Round};
use annals_core::{Repository, RepositoryOptions};
use annals_peers_bench::{cqrs::CqAccount, es::EsAccount, Cmd};
use annals_store_postgres::PgEventStore;
use bank::{AccountCommand, BankAccount};
use cqrs_es::{persist::PersistedEventStore, EventStore as _};
use criterion::{Criterion, Throughput};
use esrs::{
    manager::AggregateManager,
    store::postgres::{PgStore, PgStoreBuilder},
    AggregateState,
};
use postgres_es::{postgres_cqrs, PostgresCqrs, PostgresEventRepository};
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    Connection, Executor, PgConnection, PgPool,
};
use tokio::runtime::Runtime;

struct Peers {
    annals: Repository<BankAccount, PgEventStore>,
    /// The same with the aggregate cache on (a hot command skips its load).
    annals_cached: Repository<BankAccount, PgEventStore>,
    annals_plain: Repository<BankAccount, PgEventStore>,
    cqrs: PostgresCqrs<CqAccount>,
    pool: PgPool,
    esrs: AggregateManager<PgStore<EsAccount>>,
}

async fn setup() -> Peers {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
    let mut admin = PgConnection::connect(&url)
        .await
        .expect("PostgreSQL at DATABASE_URL");
    admin
        .execute("DROP DATABASE IF EXISTS annals_peers WITH (FORCE)")
        .await
        .expect("drop");
    admin
        .execute("CREATE DATABASE annals_peers")
        .await
        .expect("create");
    let options = PgConnectOptions::from_str(&url)
        .expect("url")
        .database("annals_peers");
    // One pool for every framework, without sqlx's ping before each statement (as
    // annals' PgEventStore::connect builds its pool; the peers gain as much from it).
    let pool = PgPoolOptions::new()
        .max_connections(24)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .expect("pool");
    let store = PgEventStore::new(pool.clone());
    store.migrate().await.expect("annals migrate");
    pool.execute(annals_peers_bench::cqrs::DDL)
        .await
        .expect("postgres-es tables");
    let es_store: PgStore<EsAccount> = PgStoreBuilder::new(pool.clone())
        .try_build()
        .await
        .expect("esrs tables");
    Peers {
        annals: Repository::new(store.clone()),
        annals_cached: Repository::new(store.clone()).with_cache(1_024),
        annals_plain: Repository::new(store)
            .with_options(RepositoryOptions::default().snapshot_every(None)),
        cqrs: postgres_cqrs(pool.clone(), vec![], ()),
        pool,
        esrs: AggregateManager::new(es_store),
    }
}

fn open() -> Cmd {
    Cmd::Open {
        owner: "Ada".into(),
        currency: "EUR".into(),
    }
}

fn annals_open() -> AccountCommand {
    AccountCommand::Open {
        owner: "Ada".into(),
        currency: "EUR".into(),
    }
}

async fn esrs_command(p: &Peers, id: uuid::Uuid, cmd: Cmd) {
    let state = p
        .esrs
        .load(id)
        .await
        .expect("esrs load")
        .unwrap_or_else(|| AggregateState::with_id(id));
    p.esrs
        .handle_command(state, cmd)
        .await
        .expect("esrs store")
        .expect("esrs domain");
}

/// Runs `n` commands from `tasks` concurrent tasks, each on fresh aggregates.
async fn fresh(p: &'static Peers, which: &'static str, tasks: u64, n: u64, run: u64) -> Duration {
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            tokio::spawn(async move {
                for i in 0..n {
                    let id = format!("f-{run}-{t}-{i}");
                    match which {
                        // A creating command: `create` appends without reading first.
                        "annals" => {
                            drop(p.annals.create(&id, annals_open()).await.expect("annals"))
                        }
                        "cqrs-es" => p.cqrs.execute(&id, open()).await.expect("cqrs-es"),
                        _ => esrs_command(p, uuid::Uuid::new_v4(), open()).await,
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
    started.elapsed()
}

/// Opens aggregate `id` through each framework, then appends `deposits` events of one cent
/// to each: annals through its store, the peers by SQL into their tables in their format.
async fn prefill(p: &Peers, id: &str, es_id: uuid::Uuid, deposits: i64) {
    use annals_core::{encode_event, Encoding, EventStore, ExpectedVersion};
    p.annals_plain
        .execute(id, annals_open())
        .await
        .expect("annals");
    p.cqrs.execute(id, open()).await.expect("cqrs");
    esrs_command(p, es_id, open()).await;
    let mut left = deposits;
    while left > 0 {
        let n = left.min(1_000);
        let events = (0..n)
            .map(|_| {
                encode_event(&bank::AccountEvent::Deposited { amount: 1 }, Encoding::Json)
                    .expect("encode")
            })
            .collect();
        p.annals_plain
            .store()
            .append_to_stream(&format!("account-{id}"), ExpectedVersion::Any, events)
            .await
            .expect("annals fill");
        left -= n;
    }
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'BankAccount', $1, s, 'Deposited', '1.0', '{\"Deposited\":{\"amount\":1}}', '{}'
         FROM generate_series(2, $2 + 1) s",
    )
    .bind(id)
    .bind(deposits)
    .execute(&p.pool)
    .await
    .expect("cqrs-es fill");
    sqlx::query(
        "INSERT INTO bank_account_events (id, aggregate_id, payload, occurred_on, sequence_number)
         SELECT gen_random_uuid(), $1, '{\"Deposited\":{\"amount\":1}}', now(), s
         FROM generate_series(2, $2 + 1) s",
    )
    .bind(es_id)
    .bind(deposits as i32)
    .execute(&p.pool)
    .await
    .expect("esrs fill");
}

/// Runs the criterion benches; returns the esrs ids of the hot and the 10,000-event
/// aggregates.
fn bench(c: &mut Criterion, rt: &Runtime, p: &'static Peers) -> (uuid::Uuid, uuid::Uuid) {
    let run = AtomicU64::new(0);
    for (group, tasks) in [("fresh_command", 1u64), ("fresh_command_x8", 8)] {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(tasks));
        for which in ["annals", "cqrs-es", "esrs"] {
            g.bench_function(which, |b| {
                b.to_async(rt).iter_custom(|iters| {
                    fresh(p, which, tasks, iters, run.fetch_add(1, Ordering::SeqCst))
                })
            });
        }
        g.finish();
    }

    // A hot aggregate: opened through each framework, then 2,000 deposits written straight
    // into each one's own table in its own format (their per-command full reload would make
    // writing them through the framework quadratic), then commands measured on it.
    let es_hot = uuid::Uuid::new_v4();
    rt.block_on(prefill(p, "hot", es_hot, 2_000));
    let mut g = c.benchmark_group("hot_command");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.bench_function("annals", |b| {
        b.to_async(rt).iter(|| async {
            p.annals
                .execute("hot", AccountCommand::Deposit { amount: 1 })
                .await
                .expect("annals")
        })
    });
    g.bench_function("annals_cached", |b| {
        b.to_async(rt).iter(|| async {
            p.annals_cached
                .execute("hot", AccountCommand::Deposit { amount: 1 })
                .await
                .expect("annals")
        })
    });
    g.bench_function("cqrs-es", |b| {
        b.to_async(rt).iter(|| async {
            p.cqrs
                .execute("hot", Cmd::Deposit { amount: 1 })
                .await
                .expect("cqrs")
        })
    });
    g.bench_function("esrs", |b| {
        b.to_async(rt)
            .iter(|| esrs_command(p, es_hot, Cmd::Deposit { amount: 1 }))
    });
    g.finish();

    // Loading a 10,000-event aggregate (no snapshots anywhere).
    let es_big = uuid::Uuid::new_v4();
    rt.block_on(prefill(p, "big", es_big, 9_999));
    let cqrs_store = PersistedEventStore::<_, CqAccount>::new_event_store(
        PostgresEventRepository::new(p.pool.clone()),
    );
    let mut g = c.benchmark_group("load_10k");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.bench_function("annals", |b| {
        b.to_async(rt)
            .iter(|| async { p.annals_plain.load("big").await.expect("load") })
    });
    g.bench_function("cqrs-es", |b| {
        b.to_async(rt)
            .iter(|| async { cqrs_store.load_aggregate("big").await.expect("load") })
    });
    g.bench_function("esrs", |b| {
        b.to_async(rt)
            .iter(|| async { p.esrs.load(es_big).await.expect("load") })
    });
    g.finish();
    (es_hot, es_big)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let peers: &'static Peers = Box::leak(Box::new(rt.block_on(setup())));
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let (es_hot, es_big) = bench(&mut c, &rt, peers);
    c.final_summary();
    print_interleaved(
        "each peer's time over annals' for the same commands, in alternating blocks \
         (above 1: annals is faster)",
        &rt.block_on(interleaved(peers, es_hot, es_big)),
    );
    rt.block_on(server_time(peers));
}

/// CPU time used so far by every PostgreSQL process on this machine (the server is
/// local): user plus system time from /proc, in clock ticks of 10 ms.
fn server_cpu() -> Duration {
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ... utime(14) stime(15), counted after the comm.
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        if !comm.ends_with("(postgres") {
            continue;
        }
        let fields: Vec<&str> = rest.split(' ').collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += field(11) + field(12);
    }
    Duration::from_millis(ticks * 10)
}

/// Where the fresh-command limit is on this machine: the server's CPU time per command
/// (annals and each peer, 8 tasks, 2,000 commands each). With 2 cores shared by the server
/// and the bench, commands per second cannot pass about 2 s / (server + client time).
async fn server_time(p: &'static Peers) {
    println!("\nserver CPU time per fresh command, 8 tasks (from /proc, 10 ms ticks)");
    let run = AtomicU64::new(1 << 50);
    for which in ["annals", "cqrs-es", "esrs"] {
        let before = server_cpu();
        let wall = fresh(p, which, 8, 250, run.fetch_add(1, Ordering::SeqCst)).await;
        let used = server_cpu().saturating_sub(before);
        println!(
            "{which:<8} {:>6.0} µs server CPU per command, {:>6.0} commands/s",
            used.as_secs_f64() * 1e6 / 2_000.0,
            2_000.0 / wall.as_secs_f64()
        );
    }
}

/// The command workloads again, annals and one peer at a time in alternating blocks (see
/// `annals_benches::interleave`), so drift on the machine lands on both sides.
async fn interleaved(
    p: &'static Peers,
    es_hot: uuid::Uuid,
    es_big: uuid::Uuid,
) -> Vec<(&'static str, Vec<Round>)> {
    let run = AtomicU64::new(1 << 40);
    let run = &run;
    let mut results = Vec::new();
    for (label, peer, tasks) in [
        ("fresh command vs cqrs-es", "cqrs-es", 1),
        ("fresh command vs esrs", "esrs", 1),
        ("fresh command x8 vs cqrs-es", "cqrs-es", 8),
        ("fresh command x8 vs esrs", "esrs", 8),
    ] {
        let ratios = interleave(
            30,
            1,
            || async move {
                fresh(p, "annals", tasks, 10, run.fetch_add(1, Ordering::SeqCst)).await;
            },
            || async move {
                fresh(p, peer, tasks, 10, run.fetch_add(1, Ordering::SeqCst)).await;
            },
        )
        .await;
        results.push((label, ratios));
    }
    let deposit = || AccountCommand::Deposit { amount: 1 };
    let annals_hot = || async move {
        drop(p.annals.execute("hot", deposit()).await.expect("annals"));
    };
    // The prefill wrote the hot aggregate's events without the repository, so it has no
    // snapshot until its version crosses the next multiple of the snapshot interval; a
    // long-lived aggregate always has one at most that many events back. Reach that state
    // first (criterion's warm-up does the same for the benches above); 100 commands cover
    // any interval up to 100.
    for _ in 0..100 {
        annals_hot().await;
    }
    // Uncached, then with the aggregate cache (the hot command is one append, and a
    // snapshot every 25).
    for (labels, annals) in [
        (["hot command vs cqrs-es", "hot command vs esrs"], &p.annals),
        (
            [
                "hot command, cached, vs cqrs-es",
                "hot command, cached, vs esrs",
            ],
            &p.annals_cached,
        ),
    ] {
        let ours = || async move {
            drop(annals.execute("hot", deposit()).await.expect("annals"));
        };
        results.push((
            labels[0],
            interleave(20, 5, ours, || async move {
                p.cqrs
                    .execute("hot", Cmd::Deposit { amount: 1 })
                    .await
                    .expect("cqrs");
            })
            .await,
        ));
        results.push((
            labels[1],
            interleave(20, 5, ours, || {
                esrs_command(p, es_hot, Cmd::Deposit { amount: 1 })
            })
            .await,
        ));
    }
    let annals_load = || async move {
        drop(p.annals_plain.load("big").await.expect("annals"));
    };
    let cqrs_store = PersistedEventStore::<_, CqAccount>::new_event_store(
        PostgresEventRepository::new(p.pool.clone()),
    );
    let cqrs_store = &cqrs_store;
    results.push((
        "load 10k vs cqrs-es",
        interleave(10, 1, annals_load, || async move {
            drop(cqrs_store.load_aggregate("big").await.expect("cqrs"));
        })
        .await,
    ));
    results.push((
        "load 10k vs esrs",
        interleave(10, 1, annals_load, || async move {
            drop(p.esrs.load(es_big).await.expect("esrs"));
        })
        .await,
    ));
    results
}
