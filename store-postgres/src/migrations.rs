//! Which of the store's migrations a database has, without changing it.

use annals_core::Result;

use crate::{error::from_sqlx, store::MIGRATOR, PgEventStore};

/// One of the store's migrations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    /// Its version (the file's number).
    pub version: i64,
    /// What it does (from the file's name).
    pub description: String,
}

/// Where a database stands against the migrations this release ships.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationStatus {
    /// Applied, oldest first.
    pub applied: Vec<Migration>,
    /// Shipped but not applied yet: run [`PgEventStore::migrate`].
    pub pending: Vec<Migration>,
    /// Applied by a newer release (this binary does not know them): upgrade the binary.
    pub unknown: Vec<i64>,
}

impl MigrationStatus {
    /// Whether the schema is exactly what this release expects.
    pub fn is_current(&self) -> bool {
        self.pending.is_empty() && self.unknown.is_empty()
    }
}

impl PgEventStore {
    /// Reads which migrations the database has applied. Needs only `SELECT` (an
    /// application role set up by [`grant_app_role`](Self::grant_app_role) may call it), so
    /// a service can refuse to start on a schema that `migrate` has not brought up to date
    /// instead of running DDL itself.
    ///
    /// # Errors
    ///
    /// [`annals_core::Error::Backend`] when the database cannot be read.
    pub async fn migration_status(&self) -> Result<MigrationStatus> {
        let table = format!("{}._sqlx_migrations", self.inner.quoted_schema);
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&table)
            .fetch_one(self.pool())
            .await
            .map_err(from_sqlx)?;
        let applied: Vec<i64> = if exists {
            sqlx::query_scalar(&format!(
                "SELECT version FROM {table} WHERE success ORDER BY version"
            ))
            .fetch_all(self.pool())
            .await
            .map_err(from_sqlx)?
        } else {
            Vec::new()
        };
        let shipped = |version: i64| {
            MIGRATOR
                .iter()
                .find(|m| m.version == version)
                .map(|m| Migration {
                    version,
                    description: m.description.to_string(),
                })
        };
        Ok(MigrationStatus {
            applied: applied.iter().filter_map(|v| shipped(*v)).collect(),
            pending: MIGRATOR
                .iter()
                .filter(|m| !applied.contains(&m.version))
                .map(|m| Migration {
                    version: m.version,
                    description: m.description.to_string(),
                })
                .collect(),
            unknown: applied
                .into_iter()
                .filter(|v| shipped(*v).is_none())
                .collect(),
        })
    }
}
