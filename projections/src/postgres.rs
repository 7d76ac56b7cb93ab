//! PostgreSQL read models: handlers get the sqlx transaction in which the engine also
//! moves the checkpoint (tables `checkpoints` and `dead_letters` of the store's schema,
//! created by `PgEventStore::migrate`).

use std::sync::Arc;

use annals_core::Position;
use annals_store_postgres::PgEventStore;
use chrono::{DateTime, Utc};
use sqlx::{postgres::PgRow, Connection, PgConnection, Postgres, Row};

use crate::{CheckpointRecord, CheckpointStore, DeadLetter, Error, Result};

/// The transaction a Postgres projection handler writes its read model in.
pub type PgTx = sqlx::Transaction<'static, Postgres>;

/// Checkpoints, dead letters and leases in the event store's database and schema.
///
/// ```no_run
/// # async fn demo(store: annals_store_postgres::PgEventStore) {
/// let checkpoints = annals_projections::PgCheckpoints::new(&store);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct PgCheckpoints {
    store: PgEventStore,
    sql: Arc<Queries>,
}

#[derive(Debug)]
struct Queries {
    begin: String,
    commit: String,
    checkpoints: String,
    halt: String,
    record_dead_letter: String,
    dead_letters: String,
    remove_dead_letter: String,
}

/// A projection's lease: a session advisory lock on a connection of its own.
#[derive(Debug)]
pub struct PgLease {
    conn: PgConnection,
}

fn sqlx_err(e: sqlx::Error) -> Error {
    Error::backend(e)
}

fn u64_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn position(row: &PgRow) -> Result<Position> {
    Ok(Position::new(
        u64_of(row.try_get("commit_id").map_err(sqlx_err)?),
        u64_of(row.try_get("position").map_err(sqlx_err)?),
    ))
}

impl PgCheckpoints {
    /// Bookkeeping next to `store`'s events (same pool and schema). No I/O.
    pub fn new(store: &PgEventStore) -> Self {
        let schema = format!("\"{}\"", store.schema());
        let q = |sql: &str| sql.replace("{schema}", &schema);
        Self {
            store: store.clone(),
            sql: Arc::new(Queries {
                begin: q(include_str!("postgres/begin.sql")),
                commit: q(include_str!("postgres/commit.sql")),
                checkpoints: q(include_str!("postgres/checkpoints.sql")),
                halt: q(include_str!("postgres/halt.sql")),
                record_dead_letter: q(include_str!("postgres/record_dead_letter.sql")),
                dead_letters: q(include_str!("postgres/dead_letters.sql")),
                remove_dead_letter: q(include_str!("postgres/remove_dead_letter.sql")),
            }),
        }
    }

    /// The pool (read models are queried through it).
    pub fn pool(&self) -> &sqlx::PgPool {
        self.store.pool()
    }

    async fn read_checkpoints(&self, projection: Option<&str>) -> Result<Vec<CheckpointRecord>> {
        let rows = sqlx::query(&self.sql.checkpoints)
            .bind(projection)
            .fetch_all(self.pool())
            .await
            .map_err(sqlx_err)?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state").map_err(sqlx_err)?;
                let error: Option<String> = row.try_get("error").map_err(sqlx_err)?;
                Ok(CheckpointRecord {
                    projection: row.try_get("projection").map_err(sqlx_err)?,
                    position: position(row)?,
                    halted: (state == "halted").then(|| error.unwrap_or_default()),
                    updated_at: row.try_get("updated_at").map_err(sqlx_err)?,
                })
            })
            .collect()
    }
}

impl CheckpointStore for PgCheckpoints {
    type Tx = PgTx;
    type Lease = PgLease;

    async fn begin(&self, projection: &str, from: Position) -> Result<PgTx> {
        let mut tx = self.pool().begin().await.map_err(sqlx_err)?;
        let row = sqlx::query(&self.sql.begin)
            .bind(projection)
            .fetch_one(&mut *tx)
            .await
            .map_err(sqlx_err)?;
        let actual = position(&row)?;
        if actual != from {
            return Err(Error::Fenced {
                projection: projection.to_owned(),
                expected: from,
                actual,
            });
        }
        Ok(tx)
    }

    async fn commit(&self, mut tx: PgTx, projection: &str, to: Position) -> Result<()> {
        sqlx::query(&self.sql.commit)
            .bind(projection)
            .bind(i64_of(to.commit()))
            .bind(i64_of(to.sequence()))
            .execute(&mut *tx)
            .await
            .map_err(sqlx_err)?;
        tx.commit().await.map_err(sqlx_err)
    }

    async fn begin_untracked(&self) -> Result<PgTx> {
        self.pool().begin().await.map_err(sqlx_err)
    }

    async fn commit_untracked(&self, tx: PgTx) -> Result<()> {
        tx.commit().await.map_err(sqlx_err)
    }

    async fn checkpoint(&self, projection: &str) -> Result<Option<CheckpointRecord>> {
        Ok(self.read_checkpoints(Some(projection)).await?.pop())
    }

    async fn checkpoints(&self) -> Result<Vec<CheckpointRecord>> {
        self.read_checkpoints(None).await
    }

    async fn halt(&self, projection: &str, error: &str) -> Result<()> {
        sqlx::query(&self.sql.halt)
            .bind(projection)
            .bind(error)
            .execute(self.pool())
            .await
            .map_err(sqlx_err)?;
        Ok(())
    }

    async fn record_dead_letter(&self, tx: &mut PgTx, letter: &DeadLetter) -> Result<()> {
        sqlx::query(&self.sql.record_dead_letter)
            .bind(&letter.projection)
            .bind(letter.event_id)
            .bind(i64_of(letter.position.commit()))
            .bind(i64_of(letter.position.sequence()))
            .bind(&letter.stream_id)
            .bind(i64_of(letter.stream_version))
            .bind(&letter.event_type)
            .bind(&letter.error)
            .bind(i32::try_from(letter.attempts).unwrap_or(i32::MAX))
            .bind(letter.failed_at)
            .execute(&mut **tx)
            .await
            .map_err(sqlx_err)?;
        Ok(())
    }

    async fn dead_letters(&self, projection: Option<&str>) -> Result<Vec<DeadLetter>> {
        let rows = sqlx::query(&self.sql.dead_letters)
            .bind(projection)
            .fetch_all(self.pool())
            .await
            .map_err(sqlx_err)?;
        rows.iter()
            .map(|row| {
                let attempts: i32 = row.try_get("attempts").map_err(sqlx_err)?;
                let failed_at: DateTime<Utc> = row.try_get("failed_at").map_err(sqlx_err)?;
                Ok(DeadLetter {
                    id: row.try_get("id").map_err(sqlx_err)?,
                    projection: row.try_get("projection").map_err(sqlx_err)?,
                    event_id: row.try_get("event_id").map_err(sqlx_err)?,
                    position: position(row)?,
                    stream_id: row.try_get("stream_id").map_err(sqlx_err)?,
                    stream_version: u64_of(row.try_get("stream_version").map_err(sqlx_err)?),
                    event_type: row.try_get("event_type").map_err(sqlx_err)?,
                    error: row.try_get("error").map_err(sqlx_err)?,
                    attempts: u32::try_from(attempts).unwrap_or_default(),
                    failed_at,
                })
            })
            .collect()
    }

    async fn remove_dead_letter(&self, tx: &mut PgTx, id: i64) -> Result<bool> {
        let done = sqlx::query(&self.sql.remove_dead_letter)
            .bind(id)
            .execute(&mut **tx)
            .await
            .map_err(sqlx_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn try_lease(&self, projection: &str) -> Result<Option<PgLease>> {
        // A connection of its own, outside the pool: the lock lives exactly as long as it.
        let mut conn = PgConnection::connect_with(&self.pool().connect_options())
            .await
            .map_err(sqlx_err)?;
        let held: bool = sqlx::query_scalar(include_str!("postgres/try_lease.sql"))
            .bind(self.store.schema())
            .bind(projection)
            .fetch_one(&mut conn)
            .await
            .map_err(sqlx_err)?;
        if held {
            Ok(Some(PgLease { conn }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }

    async fn lease_alive(&self, lease: &mut PgLease) -> bool {
        lease.conn.ping().await.is_ok()
    }
}
