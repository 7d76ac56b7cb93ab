//! Process managers' timers and open instances in Postgres (migration 0009).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{i64_of, sqlx_err, u64_of, PgCheckpoints};
use crate::{ProcessStore, Result, Timer};

impl ProcessStore for PgCheckpoints {
    async fn put_timer(&self, timer: &Timer) -> Result<()> {
        sqlx::query(&self.sql.put_timer)
            .bind(&timer.process)
            .bind(&timer.instance)
            .bind(&timer.name)
            .bind(timer.due_at)
            .bind(i64_of(timer.version))
            .execute(self.pool())
            .await
            .map_err(sqlx_err)?;
        Ok(())
    }

    async fn claim_due_timers(
        &self,
        process: &str,
        now: DateTime<Utc>,
        claim_for: Duration,
        limit: usize,
    ) -> Result<Vec<Timer>> {
        let until = now + chrono::Duration::from_std(claim_for).unwrap_or(chrono::Duration::MAX);
        let rows = sqlx::query(&self.sql.claim_timers)
            .bind(process)
            .bind(now)
            .bind(until)
            .bind(i64_of(limit as u64))
            .fetch_all(self.pool())
            .await
            .map_err(sqlx_err)?;
        rows.iter()
            .map(|row| {
                Ok(Timer {
                    process: process.to_owned(),
                    instance: row.try_get("instance").map_err(sqlx_err)?,
                    name: row.try_get("name").map_err(sqlx_err)?,
                    due_at: Some(row.try_get("due_at").map_err(sqlx_err)?),
                    version: u64_of(row.try_get("version").map_err(sqlx_err)?),
                })
            })
            .collect()
    }

    async fn timer_fired(&self, timer: &Timer) -> Result<()> {
        sqlx::query(&self.sql.timer_fired)
            .bind(&timer.process)
            .bind(&timer.instance)
            .bind(&timer.name)
            .bind(i64_of(timer.version))
            .execute(self.pool())
            .await
            .map_err(sqlx_err)?;
        Ok(())
    }

    async fn put_instance(&self, process: &str, instance: &str, open: bool) -> Result<()> {
        sqlx::query(&self.sql.put_instance)
            .bind(process)
            .bind(instance)
            .bind(open)
            .execute(self.pool())
            .await
            .map_err(sqlx_err)?;
        Ok(())
    }

    async fn process_counts(&self, process: &str) -> Result<(u64, u64)> {
        let (open, timers): (i64, i64) = sqlx::query_as(&self.sql.process_counts)
            .bind(process)
            .fetch_one(self.pool())
            .await
            .map_err(sqlx_err)?;
        Ok((u64_of(open), u64_of(timers)))
    }
}
