//! A projection that makes double or skipped application visible, on Postgres and in
//! memory, and fresh databases for the Postgres tests (`DATABASE_URL`, default
//! `postgres://root@127.0.0.1:5432/test`).

#![allow(dead_code, unreachable_pub)]

use std::{
    collections::BTreeMap,
    str::FromStr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use annals_core::{
    encode_event, DomainEvent, Encoding, Envelope, EventStore, ExpectedVersion, Position, ReadAll,
};
use annals_projections::{
    FailurePolicy, HandlerError, MemoryCheckpoints, MemoryTx, PgCheckpoints, PgTx, Projection,
    RetryPolicy,
};
use annals_store_postgres::PgEventStore;
use serde::{Deserialize, Serialize};
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    Connection, Executor, PgConnection, Row,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TallyEvent {
    #[serde(rename = "added")]
    Added { n: i64 },
    #[serde(rename = "ignored")]
    Ignored,
}
impl DomainEvent for TallyEvent {}

/// Per stream: the sum of `n`, how many events were applied, and the last version seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub total: i64,
    pub applied: i64,
    pub last_version: i64,
}

/// Sums `added` events per stream. The handler refuses a version at or below the last one
/// applied, so a repeated event halts the projection instead of hiding; a skipped one
/// shows against [`expected_tallies`].
#[derive(Clone, Default)]
pub struct Tallies {
    /// Fail on `n == 13` while set.
    pub poison: Arc<AtomicBool>,
    pub policy: FailurePolicy,
    /// Sleep per event, to widen the window for crashes mid-batch.
    pub slow: Option<Duration>,
    /// A deliberate bug: counts every `n` twice.
    pub bug: bool,
}

impl Tallies {
    fn check(&self, event: &Envelope<TallyEvent>, row: &Tally) -> Result<(), HandlerError> {
        if let TallyEvent::Added { n: 13 } = event.payload {
            if self.poison.load(Ordering::SeqCst) {
                return Err("13 is unlucky".into());
            }
        }
        if event.stream_version as i64 <= row.last_version {
            return Err(format!(
                "stream {} went from version {} back to {}",
                event.stream_id, row.last_version, event.stream_version
            )
            .into());
        }
        Ok(())
    }
}

pub fn fold(row: &mut Tally, event: &Envelope<TallyEvent>) {
    fold_with(row, event, false);
}

fn fold_with(row: &mut Tally, event: &Envelope<TallyEvent>, bug: bool) {
    if let TallyEvent::Added { n } = event.payload {
        row.total += if bug { 2 * n } else { n };
    }
    row.applied += 1;
    row.last_version = event.stream_version as i64;
}

impl Projection<MemoryCheckpoints> for Tallies {
    type Event = TallyEvent;
    fn name(&self) -> &str {
        "tallies"
    }
    fn event_types(&self) -> Vec<String> {
        vec!["added".into()]
    }
    fn on_failure(&self) -> FailurePolicy {
        self.policy
    }
    fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(10),
        }
    }
    fn tables(&self) -> Vec<String> {
        vec!["tallies".into()]
    }
    async fn handle(
        &self,
        event: &Envelope<TallyEvent>,
        tx: &mut MemoryTx,
    ) -> Result<(), HandlerError> {
        let mut row: Tally = tx.get("tallies", &event.stream_id)?.unwrap_or_default();
        self.check(event, &row)?;
        fold_with(&mut row, event, self.bug);
        tx.put("tallies", &event.stream_id, &row)?;
        if let Some(slow) = self.slow {
            tokio::time::sleep(slow).await;
        }
        Ok(())
    }
}

impl Projection<PgCheckpoints> for Tallies {
    type Event = TallyEvent;
    fn name(&self) -> &str {
        "tallies"
    }
    fn event_types(&self) -> Vec<String> {
        vec!["added".into()]
    }
    fn on_failure(&self) -> FailurePolicy {
        self.policy
    }
    fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(10),
        }
    }
    fn tables(&self) -> Vec<String> {
        vec!["tallies".into()]
    }
    async fn setup(&self, tx: &mut PgTx) -> Result<(), HandlerError> {
        tx.execute(
            "CREATE TABLE IF NOT EXISTS tallies (
                stream_id text PRIMARY KEY, total bigint NOT NULL,
                applied bigint NOT NULL, last_version bigint NOT NULL)",
        )
        .await?;
        Ok(())
    }
    async fn handle(
        &self,
        event: &Envelope<TallyEvent>,
        tx: &mut PgTx,
    ) -> Result<(), HandlerError> {
        <Self as Projection<PgCheckpoints>>::handle_batch(self, std::slice::from_ref(event), tx)
            .await
    }
    /// Reads the touched rows once, folds in Rust, writes them back in one statement.
    async fn handle_batch(
        &self,
        events: &[Envelope<TallyEvent>],
        tx: &mut PgTx,
    ) -> Result<(), HandlerError> {
        let streams: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
        let rows = sqlx::query(
            "SELECT stream_id, total, applied, last_version FROM tallies
             WHERE stream_id = ANY($1) FOR UPDATE",
        )
        .bind(&streams)
        .fetch_all(&mut **tx)
        .await?;
        let mut tallies: BTreeMap<String, Tally> = rows
            .iter()
            .map(|r| {
                (
                    r.get("stream_id"),
                    Tally {
                        total: r.get("total"),
                        applied: r.get("applied"),
                        last_version: r.get("last_version"),
                    },
                )
            })
            .collect();
        for event in events {
            let row = tallies.entry(event.stream_id.clone()).or_default();
            self.check(event, row)?;
            fold_with(row, event, self.bug);
            if let Some(slow) = self.slow {
                tokio::time::sleep(slow).await;
            }
        }
        let (ids, rows): (Vec<String>, Vec<Tally>) = tallies.into_iter().unzip();
        sqlx::query(
            "INSERT INTO tallies (stream_id, total, applied, last_version)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])
             ON CONFLICT (stream_id) DO UPDATE
             SET total = excluded.total, applied = excluded.applied, last_version = excluded.last_version",
        )
        .bind(&ids)
        .bind(rows.iter().map(|r| r.total).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.applied).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.last_version).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// Appends one `added n` event to `stream`; returns its position.
pub async fn add<S: EventStore>(store: &S, stream: &str, n: i64) -> Position {
    let event = encode_event(&TallyEvent::Added { n }, Encoding::Json).expect("encode");
    store
        .append_to_stream(stream, ExpectedVersion::Any, vec![event])
        .await
        .expect("append")
        .position
}

/// Appends `count` events over `streams` streams, in appends of up to `per_append` events
/// to one stream each, with every 7th event an `ignored` one; returns the last position.
pub async fn append_tallies<S: EventStore>(
    store: &S,
    prefix: &str,
    streams: usize,
    count: usize,
    per_append: usize,
) -> Position {
    let mut last = Position::START;
    let mut i = 0;
    while i < count {
        let stream = format!("{prefix}-{}", (i / per_append) % streams);
        let batch: Vec<_> = (i..(i + per_append).min(count))
            .map(|k| {
                let event = if k % 7 == 6 {
                    TallyEvent::Ignored
                } else {
                    TallyEvent::Added {
                        n: (k % 10) as i64 + 1,
                    }
                };
                encode_event(&event, Encoding::Json).expect("encode")
            })
            .collect();
        i += batch.len();
        last = store
            .append_to_stream(&stream, ExpectedVersion::Any, batch)
            .await
            .expect("append")
            .position;
    }
    last
}

/// What the tallies must be: a from-scratch fold of the whole log.
pub async fn expected_tallies<S: EventStore>(store: &S) -> BTreeMap<String, Tally> {
    let mut expected: BTreeMap<String, Tally> = BTreeMap::new();
    let mut after = Position::START;
    loop {
        let page = store
            .read_all(ReadAll::after(after).limit(5_000).event_types(["added"]))
            .await
            .expect("read");
        let Some(last) = page.last() else { break };
        after = last.position;
        for raw in &page {
            let event =
                annals_core::decode_event::<TallyEvent>(raw, &annals_core::Upcasters::new())
                    .expect("decode");
            fold(expected.entry(raw.stream_id.clone()).or_default(), &event);
        }
    }
    expected
}

pub mod delivery;
pub mod parking;
pub mod scenarios;
pub mod skip;
pub mod start_from;
pub mod timers;

pub async fn pg_rows(pool: &sqlx::PgPool) -> BTreeMap<String, Tally> {
    sqlx::query("SELECT stream_id, total, applied, last_version FROM tallies")
        .fetch_all(pool)
        .await
        .expect("read tallies")
        .iter()
        .map(|r| {
            (
                r.get("stream_id"),
                Tally {
                    total: r.get("total"),
                    applied: r.get("applied"),
                    last_version: r.get("last_version"),
                },
            )
        })
        .collect()
}

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned())
}

/// A migrated store in a fresh database; drop it with [`drop_database`].
pub async fn fresh_store() -> (PgEventStore, String) {
    let name = format!("annals_test_{}", uuid::Uuid::now_v7().simple());
    let mut admin = PgConnection::connect(&database_url())
        .await
        .unwrap_or_else(|e| panic!("the Postgres tests need a server at DATABASE_URL: {e}"));
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("CREATE DATABASE");
    let options = PgConnectOptions::from_str(&database_url())
        .expect("DATABASE_URL")
        .database(&name);
    let pool = PgPoolOptions::new()
        .max_connections(20)
        .connect_with(options)
        .await
        .expect("connect");
    let store = PgEventStore::new(pool);
    store.migrate().await.expect("migrate");
    (store, name)
}

pub async fn drop_database(name: &str) {
    let mut admin = PgConnection::connect(&database_url()).await.expect("admin");
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .expect("DROP DATABASE");
}
