//! PostgreSQL read models: handlers get the sqlx transaction in which the engine also
//! moves the checkpoint (tables `checkpoints` and `dead_letters` of the store's schema,
//! created by `PgEventStore::migrate`). One file per concern: checkpoints here, then
//! `dead_letters`, `leases` and `rebuilds`.

use std::sync::Arc;

use annals_core::Position;
use annals_store_postgres::PgEventStore;
use sqlx::{postgres::PgRow, Postgres, Row};

use crate::{CheckpointRecord, Checkpoints, Error, Result};

mod dead_letters;
mod leases;
mod processes;
mod rebuilds;

pub use leases::PgLease;

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
    lock: String,
    ensure_checkpoint: String,
    commit: String,
    checkpoints: String,
    halt: String,
    record_dead_letter: String,
    dead_letters: String,
    remove_dead_letter: String,
    delete_checkpoint: String,
    delete_dead_letters: String,
    move_dead_letters: String,
    streams_with_dead_letters: String,
    put_timer: String,
    claim_timers: String,
    timer_fired: String,
    put_instance: String,
    process_counts: String,
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
        // The store's schema name is validated by annals-store-postgres.
        let q = |sql: &str| sql.replace("{schema}", &schema);
        Self {
            store: store.clone(),
            sql: Arc::new(Queries {
                lock: q(include_str!("postgres/lock.sql")),
                ensure_checkpoint: q(include_str!("postgres/ensure_checkpoint.sql")),
                commit: q(include_str!("postgres/commit.sql")),
                checkpoints: q(include_str!("postgres/checkpoints.sql")),
                halt: q(include_str!("postgres/halt.sql")),
                record_dead_letter: q(include_str!("postgres/record_dead_letter.sql")),
                dead_letters: q(include_str!("postgres/dead_letters.sql")),
                remove_dead_letter: q(include_str!("postgres/remove_dead_letter.sql")),
                delete_checkpoint: q(include_str!("postgres/delete_checkpoint.sql")),
                delete_dead_letters: q(include_str!("postgres/delete_dead_letters.sql")),
                move_dead_letters: q(include_str!("postgres/move_dead_letters.sql")),
                streams_with_dead_letters: q(include_str!(
                    "postgres/streams_with_dead_letters.sql"
                )),
                put_timer: q(include_str!("postgres/put_timer.sql")),
                claim_timers: q(include_str!("postgres/claim_timers.sql")),
                timer_fired: q(include_str!("postgres/timer_fired.sql")),
                put_instance: q(include_str!("postgres/put_instance.sql")),
                process_counts: q(include_str!("postgres/process_counts.sql")),
            }),
        }
    }

    /// The pool (read models are queried through it).
    pub fn pool(&self) -> &sqlx::PgPool {
        self.store.pool()
    }

    /// The event store whose schema holds the checkpoints, dead letters and inbox.
    pub fn store(&self) -> &PgEventStore {
        &self.store
    }

    /// Begins a transaction on a pooled connection, in a way a dropped caller cannot
    /// interrupt.
    ///
    /// sqlx's `begin` (0.8, and 0.9.0), dropped after BEGIN is sent and before its reply (a worker aborted
    /// or timed out at that moment), returns the connection to the pool inside the open
    /// transaction, believing it idle. The next user of that connection, an append for
    /// instance, then runs inside that transaction: acknowledged, invisible to others, and
    /// lost if whoever uses the connection next rolls back (upstream: transact-rs/sqlx#4393,
    /// fixed by #4394, in no release up to 0.9.0). On a task of its own, `begin` always
    /// completes; a transaction nobody waits for any more is dropped there, which rolls it
    /// back before the connection is reused.
    async fn begin_tx(&self) -> Result<PgTx> {
        let pool = self.pool().clone();
        tokio::spawn(async move { pool.begin().await })
            .await
            .map_err(|e| Error::backend(format!("beginning a transaction: {e}")))?
            .map_err(sqlx_err)
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
                let attempts: Option<i32> = row.try_get("halted_attempts").map_err(sqlx_err)?;
                Ok(CheckpointRecord {
                    projection: row.try_get("projection").map_err(sqlx_err)?,
                    position: position(row)?,
                    halted: (state == "halted").then(|| error.unwrap_or_default()),
                    halted_attempts: attempts.and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
                    updated_at: row.try_get("updated_at").map_err(sqlx_err)?,
                })
            })
            .collect()
    }

    /// Takes `projection`'s checkpoint lock for the rest of `tx` and reads where the
    /// checkpoint stands (after the lock, so it sees what the previous holder committed).
    /// The lock is an advisory lock, not a row lock: it takes no transaction id, so a batch
    /// that delivers to a broker before it writes holds no tailing reader back meanwhile.
    async fn lock_checkpoint(&self, tx: &mut PgTx, projection: &str) -> Result<Position> {
        let (commit, sequence): (Option<i64>, Option<i64>) = sqlx::query_as(&self.sql.lock)
            .bind(self.store.schema())
            .bind(projection)
            .fetch_one(&mut **tx)
            .await
            .map_err(sqlx_err)?;
        Ok(Position::new(
            u64_of(commit.unwrap_or(0)),
            u64_of(sequence.unwrap_or(0)),
        ))
    }
}

impl Checkpoints for PgCheckpoints {
    type Tx = PgTx;

    async fn begin(&self, projection: &str, from: Position) -> Result<PgTx> {
        let mut tx = self.begin_tx().await?;
        let actual = self.lock_checkpoint(&mut tx, projection).await?;
        if actual != from {
            return Err(Error::Fenced {
                projection: projection.to_owned(),
                expected: from,
                actual,
            });
        }
        Ok(tx)
    }

    async fn lock(&self, projection: &str) -> Result<(PgTx, Position)> {
        let mut tx = self.begin_tx().await?;
        let at = self.lock_checkpoint(&mut tx, projection).await?;
        Ok((tx, at))
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
        self.begin_tx().await
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

    async fn halt(&self, projection: &str, at: Position, error: &str, attempts: u32) -> Result<()> {
        sqlx::query(&self.sql.halt)
            .bind(projection)
            .bind(error)
            .bind(i64_of(at.commit()))
            .bind(i64_of(at.sequence()))
            .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
            .execute(self.pool())
            .await
            .map_err(sqlx_err)?;
        Ok(())
    }
}
