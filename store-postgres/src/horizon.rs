//! The read horizon: tailing readers see events up to the oldest transaction still running
//! anywhere on the cluster (the price of a gap-free log). An idle-in-transaction session
//! with a transaction id holds every reader back for as long as it stays open, even from
//! another database; this says how far, and who.

use annals_core::Result;
use sqlx::Row;

use crate::{error::from_sqlx, PgEventStore};

/// The session with the oldest running transaction id on the cluster.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct HorizonHolder {
    /// Backend process id (`pg_terminate_backend(pid)` ends it).
    pub pid: i32,
    /// Its database.
    pub database: Option<String>,
    /// Its user.
    pub user: Option<String>,
    /// `active`, `idle in transaction`, ...
    pub state: Option<String>,
    /// How long its transaction has been open, in seconds.
    pub transaction_age_seconds: f64,
    /// The start of its current or last query (`<insufficient privilege>` for other
    /// users' sessions unless the role has `pg_read_all_stats`).
    pub query: Option<String>,
}

impl PgEventStore {
    /// How many committed events tailing readers cannot see yet (what
    /// [`EventStore::held_back`](annals_core::EventStore::held_back) answers).
    pub(crate) async fn held_back_count(&self) -> Result<u64> {
        let held_back: i64 = sqlx::query_scalar(&self.inner.sql.held_back)
            .fetch_one(&self.pool)
            .await
            .map_err(from_sqlx)?;
        Ok(u64::try_from(held_back).unwrap_or_default())
    }

    /// The session holding tailing readers back (the oldest running transaction id on the
    /// cluster), if any; ask when [`held_back`](annals_core::EventStore::held_back) is not
    /// zero. Guard against stalls with `idle_in_transaction_session_timeout`.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn horizon_holder(&self) -> Result<Option<HorizonHolder>> {
        sqlx::query(include_str!("sql/horizon_holder.sql"))
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?
            .map(|row| -> sqlx::Result<HorizonHolder> {
                Ok(HorizonHolder {
                    pid: row.try_get("pid")?,
                    database: row.try_get("datname")?,
                    user: row.try_get("usename")?,
                    state: row.try_get("state")?,
                    transaction_age_seconds: row.try_get("age_seconds")?,
                    query: row.try_get("query")?,
                })
            })
            .transpose()
            .map_err(from_sqlx)
    }
}
