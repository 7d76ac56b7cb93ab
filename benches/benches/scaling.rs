//! What one PostgreSQL sustains: appends from 1 to 64 concurrent writers, each appending
//! to its own stream (one event per append, and batches of 100), next to plain INSERTs
//! from as many writers, interleaved in the same run; then with group commit on, against
//! INSERTs from 8 and from 64 connections. The numbers behind SCALING.md.
//!
//! Run with: `cargo bench -p annals-benches --bench scaling` (PostgreSQL at
//! `DATABASE_URL`; it drops and recreates the database `annals_bench`).
//! `ANNALS_BENCH_SCALING_ROUNDS` sets the rounds per row (default 4).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use annals_benches::{bench_pool, interleave, raw_tables, runtime, store, Round};
use annals_core::{encode_event, Encoding, EventStore, ExpectedVersion, NewEvent};
use annals_store_postgres::{PgEventStore, PgStoreOptions};
use bank::AccountEvent;
use sqlx::PgPool;

/// Events each side appends per round, whatever the number of writers.
const EVENTS_PER_ROUND: u64 = 4_096;

fn deposit() -> NewEvent {
    encode_event(&AccountEvent::Deposited { amount: 1 }, Encoding::Json).expect("encode")
}

/// `writers` tasks, each appending `per_writer` appends of `batch` events to its own stream.
async fn annals(store: &PgEventStore, prefix: &str, writers: u64, batch: u64) {
    let per_writer = EVENTS_PER_ROUND / writers / batch;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            let stream = format!("account-{prefix}-{w}");
            tokio::spawn(async move {
                for i in 0..per_writer {
                    let events = (0..batch).map(|_| deposit()).collect();
                    store
                        .append_to_stream(&stream, ExpectedVersion::Exact(i * batch), events)
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
}

/// The baseline of [`annals`]: plain INSERTs of the same rows (one multi-row INSERT per
/// batch), no stream table, no version check.
async fn raw(pool: &PgPool, prefix: &str, writers: u64, batch: u64) {
    let per_writer = EVENTS_PER_ROUND / writers / batch;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let pool = pool.clone();
            let stream = format!("account-{prefix}-{w}");
            tokio::spawn(async move {
                for i in 0..per_writer {
                    let events: Vec<NewEvent> = (0..batch).map(|_| deposit()).collect();
                    let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.event_id).collect();
                    let versions: Vec<i64> =
                        (1..=batch).map(|v| (i * batch + v) as i64).collect();
                    let payloads: Vec<String> = events
                        .iter()
                        .map(|e| String::from_utf8(e.payload.clone()).expect("json"))
                        .collect();
                    sqlx::query(
                        "INSERT INTO raw_events (event_id, stream_id, stream_version, event_type, payload)
                         SELECT id, $2, v, 'Deposited', p::jsonb
                         FROM unnest($1::uuid[], $3::bigint[], $4::text[]) AS t(id, v, p)",
                    )
                    .bind(&ids)
                    .bind(&stream)
                    .bind(&versions)
                    .bind(&payloads)
                    .execute(&pool)
                    .await
                    .expect("raw insert");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
}

fn main() {
    let rt = runtime();
    let rounds: usize = std::env::var("ANNALS_BENCH_SCALING_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    // ANNALS_BENCH_COMMITTERS sets PgStoreOptions::group_committers (default: its default).
    let committers: usize = std::env::var("ANNALS_BENCH_COMMITTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    // ANNALS_BENCH_GROUP_ABOVE sets PgStoreOptions::group_commit_above (default: its
    // default, 8; 0 groups every append).
    let group_above: usize = std::env::var("ANNALS_BENCH_GROUP_ABOVE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let (wide, store, grouped) = rt.block_on(async {
        let pool = bench_pool().await;
        raw_tables(&pool).await;
        // Every writer holds a connection for its append: the pool must not be the limit.
        let wide = sqlx::postgres::PgPoolOptions::new()
            .max_connections(72)
            .connect_with(pool.connect_options().as_ref().clone())
            .await
            .expect("a pool of 72 connections");
        let store = store(&wide, "scaling").await;
        let grouped = PgEventStore::with_options(
            wide.clone(),
            PgStoreOptions::new()
                .schema("grouped")
                .group_commit(true)
                .group_commit_above(group_above)
                .group_committers(committers),
        )
        .expect("schema name");
        grouped.migrate().await.expect("migrate");
        (wide, store, grouped)
    });
    let round = AtomicU64::new(0);
    let mut rows: Vec<(String, Vec<Round>)> = Vec::new();
    // ANNALS_BENCH_SCALING_ONLY=grouped runs only the group-commit rows.
    let only_grouped = std::env::var("ANNALS_BENCH_SCALING_ONLY").is_ok_and(|v| v == "grouped");
    let plain: &[(u64, u64)] = if only_grouped {
        &[]
    } else {
        &[(1, 1), (8, 1), (32, 1), (64, 1), (8, 100), (32, 100)]
    };
    for &(writers, batch) in plain {
        let results = rt.block_on(interleave(
            rounds,
            1,
            || {
                let prefix = format!("a{}", round.fetch_add(1, Ordering::SeqCst));
                let store = &store;
                async move { annals(store, &prefix, writers, batch).await }
            },
            || {
                let prefix = format!("r{}", round.fetch_add(1, Ordering::SeqCst));
                let wide = &wide;
                async move { raw(wide, &prefix, writers, batch).await }
            },
        ));
        rows.push((format!("{writers} writers x {batch} event(s)"), results));
    }
    // Group commit (PgStoreOptions::group_commit): annals' writers share commits; the
    // baseline's INSERTs come from 8 and from 64 connections (Postgres groups their WAL
    // flushes on its own: that is what group commit has to beat).
    for (writers, raw_writers) in [(8, 8), (16, 16), (32, 32), (64, 8), (64, 64)] {
        let results = rt.block_on(interleave(
            rounds,
            1,
            || {
                let prefix = format!("g{}", round.fetch_add(1, Ordering::SeqCst));
                let grouped = &grouped;
                async move { annals(grouped, &prefix, writers, 1).await }
            },
            || {
                let prefix = format!("r{}", round.fetch_add(1, Ordering::SeqCst));
                let wide = &wide;
                async move { raw(wide, &prefix, raw_writers, 1).await }
            },
        ));
        rows.push((
            format!("{writers} grouped vs {raw_writers} INSERTing"),
            results,
        ));
    }
    print_rates(&rows);
}

/// Events per second on each side (median round) and their ratio.
fn print_rates(rows: &[(String, Vec<Round>)]) {
    fn median(mut values: Vec<f64>) -> f64 {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    }
    let rate = |d: Duration| EVENTS_PER_ROUND as f64 / d.as_secs_f64();
    println!("\nappends per second from concurrent writers, each on its own stream (median round)");
    println!(
        "{:<28} {:>12} {:>14} {:>7} {:>7}",
        "workload", "annals ev/s", "INSERT ev/s", "ratio", "rounds"
    );
    for (label, rounds) in rows {
        println!(
            "{:<28} {:>12.0} {:>14.0} {:>7.2} {:>7}",
            label,
            median(rounds.iter().map(|r| rate(r.annals)).collect()),
            median(rounds.iter().map(|r| rate(r.baseline)).collect()),
            median(rounds.iter().map(Round::ratio).collect()),
            rounds.len()
        );
    }
}
