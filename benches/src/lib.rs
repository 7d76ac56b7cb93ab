//! Shared setup for the annals benchmarks: a bench database, raw-SQL baseline tables, and
//! the ratio summary printed after criterion's own report.
//!
//! Run with: `cargo bench -p annals-benches` (PostgreSQL at `DATABASE_URL`, default
//! `postgres://root@127.0.0.1:5432/test`; the benches create `annals_bench`).

use std::{
    future::Future,
    path::PathBuf,
    str::FromStr,
    time::{Duration, Instant},
};

use annals_store_postgres::{PgEventStore, PgStoreOptions};
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    Connection, Executor, PgConnection, PgPool,
};

/// The server the benches run against.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned())
}

/// A multi-threaded runtime for async benches.
///
/// # Panics
///
/// When the runtime cannot start.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Where criterion writes its estimates (read back by [`print_summary`]).
pub fn criterion_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/criterion")
}

/// Drops and recreates the database `annals_bench` and returns a pool on it.
///
/// # Panics
///
/// When PostgreSQL cannot be reached: benches need a real server.
pub async fn bench_pool() -> PgPool {
    let mut admin = PgConnection::connect(&database_url())
        .await
        .unwrap_or_else(|e| panic!("benches need PostgreSQL at DATABASE_URL: {e}"));
    admin
        .execute("DROP DATABASE IF EXISTS annals_bench WITH (FORCE)")
        .await
        .expect("drop bench database");
    admin
        .execute("CREATE DATABASE annals_bench")
        .await
        .expect("create bench database");
    let options = PgConnectOptions::from_str(&database_url())
        .expect("DATABASE_URL")
        .database("annals_bench");
    // As PgEventStore::connect builds its pool: no ping before each statement (the store
    // runs an operation again on a dead connection). Both sides of every comparison use
    // this pool.
    PgPoolOptions::new()
        .max_connections(24)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .expect("connect to annals_bench")
}

/// A migrated store in `schema` of the bench database.
///
/// # Panics
///
/// When the migration fails.
pub async fn store(pool: &PgPool, schema: &str) -> PgEventStore {
    // ANNALS_BENCH_NOTIFY=0 measures appends without the post-commit NOTIFY.
    let notify = std::env::var("ANNALS_BENCH_NOTIFY").map_or(true, |v| v != "0");
    let options = PgStoreOptions::new().schema(schema).notify(notify);
    let store = PgEventStore::with_options(pool.clone(), options).expect("schema name");
    store.migrate().await.expect("migrate");
    store
}

/// The raw baseline: the same columns as annals' events table, written with plain INSERTs
/// (no stream table, no expected-version check, no transaction id).
///
/// # Panics
///
/// When the DDL fails.
pub async fn raw_tables(pool: &PgPool) {
    pool.execute(
        "CREATE TABLE raw_events (
            global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            event_id uuid NOT NULL UNIQUE,
            stream_id text NOT NULL,
            stream_version bigint NOT NULL,
            event_type text NOT NULL,
            schema_version integer NOT NULL DEFAULT 1,
            recorded_at timestamptz NOT NULL DEFAULT now(),
            payload jsonb NOT NULL,
            UNIQUE (stream_id, stream_version))",
    )
    .await
    .expect("raw_events");
    pool.execute(include_str!("raw_balances.sql"))
        .await
        .expect("raw_balances");
}

/// One comparison in the summary: annals' bench and its baseline, and how many events
/// one iteration handles.
#[derive(Clone, Copy, Debug)]
pub struct Pair {
    /// Criterion group.
    pub group: &'static str,
    /// annals' bench in the group.
    pub annals: &'static str,
    /// The baseline bench in the group (`None`: absolute numbers only).
    pub baseline: Option<&'static str>,
    /// Events per iteration.
    pub events: u64,
}

fn mean(group: &str, bench: &str) -> Option<Duration> {
    let path = criterion_dir()
        .join(group)
        .join(bench)
        .join("new/estimates.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let ns = json["mean"]["point_estimate"].as_f64()?;
    Some(Duration::from_nanos(ns as u64))
}

/// Prints events/s and the ratio to the baseline for each pair that ran.
pub fn print_summary(title: &str, pairs: &[Pair]) {
    println!("\n{title}");
    println!(
        "{:<34} {:>14} {:>14} {:>8}",
        "workload", "annals ev/s", "baseline ev/s", "ratio"
    );
    for pair in pairs {
        let Some(ours) = mean(pair.group, pair.annals) else {
            continue;
        };
        let rate = |d: Duration| pair.events as f64 / d.as_secs_f64();
        let base = pair.baseline.and_then(|b| mean(pair.group, b));
        println!(
            "{:<34} {:>14.0} {:>14} {:>8}",
            format!("{}/{}", pair.group, pair.annals),
            rate(ours),
            base.map_or("-".to_owned(), |b| format!("{:.0}", rate(b))),
            base.map_or("-".to_owned(), |b| format!("{:.2}", rate(ours) / rate(b))),
        );
    }
}

/// One round of [`interleave`]: the time of `block` calls of each side.
#[derive(Clone, Copy, Debug)]
pub struct Round {
    /// annals' block.
    pub annals: Duration,
    /// The baseline's block.
    pub baseline: Duration,
    /// Calls per block.
    pub calls: u32,
}

impl Round {
    /// The baseline's time over annals' (above 1: annals is faster).
    pub fn ratio(&self) -> f64 {
        self.baseline.as_secs_f64() / self.annals.as_secs_f64()
    }
}

/// Runs `rounds` rounds of `block` calls of annals' operation and of its baseline,
/// alternately (and alternating which side goes first).
///
/// Criterion measures one bench after the other, so drift on a shared machine (other
/// tenants, autovacuum, a checkpoint, a growing table) lands on one side of a ratio; here
/// it lands on both.
pub async fn interleave<A, FA, B, FB>(
    rounds: usize,
    block: u32,
    mut annals: A,
    mut baseline: B,
) -> Vec<Round>
where
    A: FnMut() -> FA,
    FA: Future<Output = ()>,
    B: FnMut() -> FB,
    FB: Future<Output = ()>,
{
    async fn timed<F: FnMut() -> Fut, Fut: Future<Output = ()>>(
        block: u32,
        op: &mut F,
    ) -> Duration {
        let started = Instant::now();
        for _ in 0..block {
            op().await;
        }
        started.elapsed()
    }
    let mut results = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let (ours, base) = if round % 2 == 0 {
            let ours = timed(block, &mut annals).await;
            (ours, timed(block, &mut baseline).await)
        } else {
            let base = timed(block, &mut baseline).await;
            (timed(block, &mut annals).await, base)
        };
        results.push(Round {
            annals: ours,
            baseline: base,
            calls: block,
        });
    }
    results
}

/// Prints each interleaved comparison: the median round's ratio, the middle half of the
/// rounds' ratios, and each side's median time per call.
pub fn print_interleaved(title: &str, results: &[(&str, Vec<Round>)]) {
    fn median(mut values: Vec<f64>, q: f64) -> f64 {
        values.sort_by(f64::total_cmp);
        values[((values.len() - 1) as f64 * q).round() as usize]
    }
    println!("\n{title}");
    println!(
        "{:<34} {:>7} {:>12} {:>12} {:>12} {:>7}",
        "workload", "ratio", "middle half", "annals/call", "other/call", "rounds"
    );
    for (label, rounds) in results {
        if rounds.is_empty() {
            continue;
        }
        let ratios: Vec<f64> = rounds.iter().map(Round::ratio).collect();
        let per_call = |side: fn(&Round) -> Duration| {
            let us = rounds
                .iter()
                .map(|r| side(r).as_secs_f64() * 1e6 / f64::from(r.calls))
                .collect();
            format!("{:.0} µs", median(us, 0.5))
        };
        println!(
            "{:<34} {:>7.2} {:>12} {:>12} {:>12} {:>7}",
            label,
            median(ratios.clone(), 0.5),
            format!(
                "{:.2}-{:.2}",
                median(ratios.clone(), 0.25),
                median(ratios, 0.75)
            ),
            per_call(|r| r.annals),
            per_call(|r| r.baseline),
            rounds.len()
        );
    }
}
