//! PostgreSQL read models: handlers get the sqlx transaction in which the engine also
//! moves the checkpoint (tables `checkpoints` and `dead_letters` of the store's schema,
//! created by `PgEventStore::migrate`).

use std::sync::Arc;

use annals_core::Position;
use annals_store_postgres::PgEventStore;
use chrono::{DateTime, Utc};
use sqlx::{
    postgres::PgRow, AssertSqlSafe, Connection, PgConnection, Postgres, Row, SqlSafeStr, SqlStr,
};

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
    begin: SqlStr,
    commit: SqlStr,
    checkpoints: SqlStr,
    halt: SqlStr,
    record_dead_letter: SqlStr,
    dead_letters: SqlStr,
    remove_dead_letter: SqlStr,
    delete_checkpoint: SqlStr,
    delete_dead_letters: SqlStr,
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
        // The store's schema name is validated by annals-store-postgres.
        let q = |sql: &str| AssertSqlSafe(sql.replace("{schema}", &schema)).into_sql_str();
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
                delete_checkpoint: q(include_str!("postgres/delete_checkpoint.sql")),
                delete_dead_letters: q(include_str!("postgres/delete_dead_letters.sql")),
            }),
        }
    }

    /// The pool (read models are queried through it).
    pub fn pool(&self) -> &sqlx::PgPool {
        self.store.pool()
    }

    /// Begins a transaction on a pooled connection, in a way a dropped caller cannot
    /// interrupt.
    ///
    /// sqlx 0.8's `begin`, dropped after BEGIN is sent and before its reply (a worker aborted
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
        let rows = sqlx::query(self.sql.checkpoints.clone())
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

/// A table name as a quoted identifier (lowercase letters, digits, `_`).
fn ident(name: &str) -> Result<String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(format!("\"{name}\""))
    } else {
        Err(Error::Store(annals_core::Error::InvalidInput(format!(
            "table name {name:?}: use lowercase letters, digits and _"
        ))))
    }
}

/// The schema a rebuild of `projection` (of the store in `store_schema`) builds its shadow
/// tables in: readable, and unique thanks to a hash of the exact names.
fn shadow_schema(store_schema: &str, projection: &str) -> String {
    // FNV-1a: stable across Rust versions, unlike the std hasher.
    let hash = format!("{store_schema}\0{projection}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    let readable: String = projection
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(30)
        .collect();
    format!("annals_rebuild_{readable}_{hash:016x}")
}

/// The checkpoint row of a rebuild in progress.
fn shadow_checkpoint(projection: &str) -> String {
    format!("{projection}@rebuild")
}

impl PgCheckpoints {
    async fn lock_checkpoint(&self, tx: &mut PgTx, projection: &str) -> Result<Position> {
        let row = sqlx::query(self.sql.begin.clone())
            .bind(projection)
            .fetch_one(&mut **tx)
            .await
            .map_err(sqlx_err)?;
        position(&row)
    }

    fn shadow(&self, projection: &str) -> String {
        shadow_schema(self.store.schema(), projection)
    }

    /// Puts the shadow schema first on this transaction's search_path; with `tables`, first
    /// checks that every one of them exists there, so no write can fall through to a live
    /// table.
    async fn shadow_path(
        &self,
        tx: &mut PgTx,
        projection: &str,
        tables: Option<&[String]>,
    ) -> Result<()> {
        let shadow = self.shadow(projection);
        if let Some(tables) = tables {
            let missing: Vec<String> =
                sqlx::query_scalar(include_str!("postgres/shadow_tables_missing.sql"))
                    .bind(tables)
                    .bind(&shadow)
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(sqlx_err)?;
            if !missing.is_empty() {
                tracing::error!(?missing, %shadow, "declared tables missing from the shadow schema");
                return Err(Error::Unsupported(
                    "a declared table is missing from the shadow schema: the projection's setup must create every table it declares, with unqualified names",
                ));
            }
        }
        sqlx::query(include_str!("postgres/shadow_search_path.sql"))
            .bind(format!("\"{shadow}\""))
            .execute(&mut **tx)
            .await
            .map_err(sqlx_err)?;
        Ok(())
    }
}

impl CheckpointStore for PgCheckpoints {
    type Tx = PgTx;
    type Lease = PgLease;

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

    async fn commit(&self, mut tx: PgTx, projection: &str, to: Position) -> Result<()> {
        sqlx::query(self.sql.commit.clone())
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

    async fn halt(&self, projection: &str, at: Position, error: &str) -> Result<()> {
        sqlx::query(self.sql.halt.clone())
            .bind(projection)
            .bind(error)
            .bind(i64_of(at.commit()))
            .bind(i64_of(at.sequence()))
            .execute(self.pool())
            .await
            .map_err(sqlx_err)?;
        Ok(())
    }

    async fn record_dead_letter(&self, tx: &mut PgTx, letter: &DeadLetter) -> Result<()> {
        sqlx::query(self.sql.record_dead_letter.clone())
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
        let rows = sqlx::query(self.sql.dead_letters.clone())
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
        let done = sqlx::query(self.sql.remove_dead_letter.clone())
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

    async fn release(&self, mut lease: PgLease) {
        // Unlock before closing, so the lease is free the moment this returns.
        let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(&mut lease.conn)
            .await;
        let _ = lease.conn.close().await;
    }

    async fn lease_alive(&self, lease: &mut PgLease) -> bool {
        lease.conn.ping().await.is_ok()
    }

    async fn lease_held(&self, projection: &str) -> Result<bool> {
        sqlx::query_scalar(include_str!("postgres/lease_held.sql"))
            .bind(self.store.schema())
            .bind(projection)
            .fetch_one(self.pool())
            .await
            .map_err(sqlx_err)
    }

    async fn reset(&self, projection: &str, tables: &[String]) -> Result<()> {
        let mut tx = self.begin_tx().await?;
        // Waits for a live batch in flight; the live worker then finds the checkpoint moved
        // and restarts from the start.
        self.lock_checkpoint(&mut tx, projection).await?;
        let mut existing = Vec::new();
        for table in tables {
            let quoted = ident(table)?;
            let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(&quoted)
                .fetch_one(&mut *tx)
                .await
                .map_err(sqlx_err)?;
            if exists {
                existing.push(quoted);
            }
        }
        let tables = existing;
        if !tables.is_empty() {
            // Quoted identifiers checked by `ident`.
            sqlx::query(AssertSqlSafe(format!("TRUNCATE {}", tables.join(", "))))
                .execute(&mut *tx)
                .await
                .map_err(sqlx_err)?;
        }
        for sql in [&self.sql.delete_checkpoint, &self.sql.delete_dead_letters] {
            sqlx::query(sql.clone())
                .bind(projection)
                .execute(&mut *tx)
                .await
                .map_err(sqlx_err)?;
        }
        tx.commit().await.map_err(sqlx_err)
    }

    async fn rebuild_checkpoint(&self, projection: &str) -> Result<Option<Position>> {
        Ok(self
            .checkpoint(&shadow_checkpoint(projection))
            .await?
            .map(|c| c.position))
    }

    async fn open_shadow(&self, projection: &str) -> Result<(PgTx, Position)> {
        let schema = self.shadow(projection);
        let mut tx = self.begin_tx().await?;
        sqlx::query(AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
        )))
        .execute(&mut *tx)
        .await
        .map_err(sqlx_err)?;
        let at = self
            .lock_checkpoint(&mut tx, &shadow_checkpoint(projection))
            .await?;
        self.shadow_path(&mut tx, projection, None).await?;
        Ok((tx, at))
    }

    async fn begin_shadow(
        &self,
        projection: &str,
        tables: &[String],
        from: Position,
    ) -> Result<PgTx> {
        let mut tx = self.begin(&shadow_checkpoint(projection), from).await?;
        self.shadow_path(&mut tx, projection, Some(tables)).await?;
        Ok(tx)
    }

    async fn commit_shadow(&self, tx: PgTx, projection: &str, to: Position) -> Result<()> {
        self.commit(tx, &shadow_checkpoint(projection), to).await
    }

    async fn begin_swap(
        &self,
        projection: &str,
        tables: &[String],
        from: Position,
    ) -> Result<PgTx> {
        let mut tx = self.begin(&shadow_checkpoint(projection), from).await?;
        self.lock_checkpoint(&mut tx, projection).await?;
        self.shadow_path(&mut tx, projection, Some(tables)).await?;
        Ok(tx)
    }

    async fn commit_swap(
        &self,
        mut tx: PgTx,
        projection: &str,
        tables: &[String],
        to: Position,
    ) -> Result<()> {
        let shadow = self.shadow(projection);
        for table in tables {
            let quoted = ident(table)?;
            let live: String = sqlx::query_scalar(include_str!("postgres/live_schema.sql"))
                .bind(table)
                .bind(&shadow)
                .fetch_one(&mut *tx)
                .await
                .map_err(sqlx_err)?;
            let live = format!("\"{}\"", live.replace('"', "\"\""));
            for sql in [
                format!("DROP TABLE IF EXISTS {live}.{quoted}"),
                format!("ALTER TABLE \"{shadow}\".{quoted} SET SCHEMA {live}"),
            ] {
                sqlx::query(AssertSqlSafe(sql))
                    .execute(&mut *tx)
                    .await
                    .map_err(sqlx_err)?;
            }
        }
        // RESTRICT: anything else the projection's setup made there (a type a moved table
        // uses, say) must fail the swap, not be dropped from under the live table.
        sqlx::query(AssertSqlSafe(format!("DROP SCHEMA \"{shadow}\" RESTRICT")))
            .execute(&mut *tx)
            .await
            .map_err(sqlx_err)?;
        // The rebuilt model went through every event, dead-lettered ones included: their
        // letters are obsolete (a retry would apply them twice).
        sqlx::query(self.sql.delete_dead_letters.clone())
            .bind(projection)
            .execute(&mut *tx)
            .await
            .map_err(sqlx_err)?;
        sqlx::query(self.sql.delete_checkpoint.clone())
            .bind(shadow_checkpoint(projection))
            .execute(&mut *tx)
            .await
            .map_err(sqlx_err)?;
        self.commit(tx, projection, to).await
    }

    async fn discard_shadow(&self, projection: &str) -> Result<bool> {
        let mut tx = self.begin_tx().await?;
        sqlx::query(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.shadow(projection)
        )))
        .execute(&mut *tx)
        .await
        .map_err(sqlx_err)?;
        let removed = sqlx::query(self.sql.delete_checkpoint.clone())
            .bind(shadow_checkpoint(projection))
            .execute(&mut *tx)
            .await
            .map_err(sqlx_err)?
            .rows_affected();
        tx.commit().await.map_err(sqlx_err)?;
        Ok(removed > 0)
    }
}
