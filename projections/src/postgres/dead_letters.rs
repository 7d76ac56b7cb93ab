//! Dead letters in Postgres, recorded in the batch's transaction.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{i64_of, position, sqlx_err, u64_of, PgCheckpoints, PgTx};
use crate::{DeadLetter, DeadLetters, Result};

impl DeadLetters for PgCheckpoints {
    async fn record_dead_letter(&self, tx: &mut PgTx, letter: &DeadLetter) -> Result<i64> {
        sqlx::query_scalar(&self.sql.record_dead_letter)
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
            .bind(letter.message.as_deref())
            .bind(letter.parks_stream)
            .fetch_one(&mut **tx)
            .await
            .map_err(sqlx_err)
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
                    message: row.try_get("message").map_err(sqlx_err)?,
                    parks_stream: row.try_get("parks_stream").map_err(sqlx_err)?,
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

    async fn streams_with_dead_letters(
        &self,
        tx: &mut PgTx,
        projection: &str,
        streams: &[String],
        every_letter: bool,
    ) -> Result<HashSet<String>> {
        let found: Vec<String> = sqlx::query_scalar(&self.sql.streams_with_dead_letters)
            .bind(projection)
            .bind(streams)
            .bind(every_letter)
            .fetch_all(&mut **tx)
            .await
            .map_err(sqlx_err)?;
        Ok(found.into_iter().collect())
    }
}
