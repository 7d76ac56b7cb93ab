//! Resets and shadow rebuilds of Postgres read models.

use annals_core::Position;

use super::{sqlx_err, PgCheckpoints, PgTx};
use crate::{rebuild::shadow_name as shadow_checkpoint, Checkpoints, Error, Rebuilds, Result};

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

impl PgCheckpoints {
    /// The schema a rebuild of `projection` writes its shadow tables in (query it to
    /// inspect a rebuild stopped with `--until`).
    pub fn shadow_schema(&self, projection: &str) -> String {
        self.shadow(projection)
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
                sqlx::query_scalar(include_str!("shadow_tables_missing.sql"))
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
        sqlx::query(include_str!("shadow_search_path.sql"))
            .bind(format!("\"{shadow}\""))
            .execute(&mut **tx)
            .await
            .map_err(sqlx_err)?;
        Ok(())
    }
}

impl Rebuilds for PgCheckpoints {
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
            sqlx::query(&format!("TRUNCATE {}", tables.join(", ")))
                .execute(&mut *tx)
                .await
                .map_err(sqlx_err)?;
        }
        for sql in [&self.sql.delete_checkpoint, &self.sql.delete_dead_letters] {
            sqlx::query(sql)
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
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42501") {
                    Error::backend(format!(
                        "{e}: a shadow rebuild creates the schema {schema} and swaps tables: run \
                         it as a role with CREATE on the database that owns the read-model tables \
                         (the schema's owner), or use `reset`"
                    ))
                } else {
                    sqlx_err(e)
                }
            })?;
        let rebuild = shadow_checkpoint(projection);
        let at = self.lock_checkpoint(&mut tx, &rebuild).await?;
        sqlx::query(&self.sql.ensure_checkpoint)
            .bind(&rebuild)
            .execute(&mut *tx)
            .await
            .map_err(sqlx_err)?;
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
            let live: String = sqlx::query_scalar(include_str!("live_schema.sql"))
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
                sqlx::query(&sql)
                    .execute(&mut *tx)
                    .await
                    .map_err(sqlx_err)?;
            }
        }
        // RESTRICT: anything else the projection's setup made there (a type a moved table
        // uses, say) must fail the swap, not be dropped from under the live table.
        sqlx::query(&format!("DROP SCHEMA \"{shadow}\" RESTRICT"))
            .execute(&mut *tx)
            .await
            .map_err(sqlx_err)?;
        // The rebuilt model went through every event, dead-lettered ones included: the live
        // letters are obsolete (a retry would apply them twice). The rebuild's own letters
        // (events it skipped) take their place.
        sqlx::query(&self.sql.delete_dead_letters)
            .bind(projection)
            .execute(&mut *tx)
            .await
            .map_err(sqlx_err)?;
        sqlx::query(&self.sql.move_dead_letters)
            .bind(shadow_checkpoint(projection))
            .bind(projection)
            .execute(&mut *tx)
            .await
            .map_err(sqlx_err)?;
        sqlx::query(&self.sql.delete_checkpoint)
            .bind(shadow_checkpoint(projection))
            .execute(&mut *tx)
            .await
            .map_err(sqlx_err)?;
        self.commit(tx, projection, to).await
    }

    async fn discard_shadow(&self, projection: &str) -> Result<bool> {
        let mut tx = self.begin_tx().await?;
        sqlx::query(&format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.shadow(projection)
        ))
        .execute(&mut *tx)
        .await
        .map_err(sqlx_err)?;
        sqlx::query(&self.sql.delete_dead_letters)
            .bind(shadow_checkpoint(projection))
            .execute(&mut *tx)
            .await
            .map_err(sqlx_err)?;
        let removed = sqlx::query(&self.sql.delete_checkpoint)
            .bind(shadow_checkpoint(projection))
            .execute(&mut *tx)
            .await
            .map_err(sqlx_err)?
            .rows_affected();
        tx.commit().await.map_err(sqlx_err)?;
        Ok(removed > 0)
    }
}
