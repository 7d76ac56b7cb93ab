//! The inbox in PostgreSQL: which events a consumer applied (`inbox`), how far each stream
//! got (`inbox_streams`), read and written inside the transaction of the handler's effect.

use std::collections::{HashMap, HashSet};

use annals_projections::{PgCheckpoints, PgTx};
use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

/// The statements, with the store's schema filled in.
#[derive(Debug)]
pub(crate) struct InboxSql {
    claim: String,
    new_streams: String,
    record: String,
    purge: String,
}

impl InboxSql {
    pub(crate) fn new(checkpoints: &PgCheckpoints) -> Self {
        // The schema name is validated by annals-store-postgres.
        let schema = format!("\"{}\"", checkpoints.store().schema());
        let q = |sql: &str| sql.replace("{schema}", &schema);
        Self {
            claim: q(include_str!("claim.sql")),
            new_streams: q(include_str!("new_streams.sql")),
            record: q(include_str!("record.sql")),
            purge: q(include_str!("purge.sql")),
        }
    }
}

/// What the consumer's rows say about a batch's streams and events, with the streams'
/// rows locked until the transaction ends.
#[derive(Debug, Default)]
pub(crate) struct Claimed {
    /// Each stream's last passed version (0: none).
    pub(crate) versions: HashMap<String, u64>,
    /// Events already applied.
    pub(crate) applied: HashSet<Uuid>,
    /// Streams with a dead letter of this consumer (later events park behind it).
    pub(crate) parked: HashSet<String>,
}

fn u64_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl InboxSql {
    /// Locks `streams`' rows (creating the missing ones) and reads them.
    pub(crate) async fn claim(
        &self,
        tx: &mut PgTx,
        consumer: &str,
        streams: &[String],
        events: &[Uuid],
    ) -> sqlx::Result<Claimed> {
        let mut claimed = self.read(tx, consumer, streams, events).await?;
        let missing: Vec<String> = streams
            .iter()
            .filter(|s| !claimed.versions.contains_key(*s))
            .cloned()
            .collect();
        if !missing.is_empty() {
            sqlx::query(&self.new_streams)
                .bind(consumer)
                .bind(&missing)
                .execute(&mut **tx)
                .await?;
            let more = self.read(tx, consumer, &missing, &[]).await?;
            claimed.versions.extend(more.versions);
        }
        Ok(claimed)
    }

    async fn read(
        &self,
        tx: &mut PgTx,
        consumer: &str,
        streams: &[String],
        events: &[Uuid],
    ) -> sqlx::Result<Claimed> {
        let rows = sqlx::query(&self.claim)
            .bind(consumer)
            .bind(streams)
            .bind(events)
            .fetch_all(&mut **tx)
            .await?;
        let mut claimed = Claimed::default();
        for row in rows {
            match row.try_get::<&str, _>("kind")? {
                "s" => {
                    claimed
                        .versions
                        .insert(row.try_get("stream_id")?, u64_of(row.try_get("version")?));
                }
                "a" => {
                    claimed.applied.insert(row.try_get("event_id")?);
                }
                _ => {
                    claimed.parked.insert(row.try_get("stream_id")?);
                }
            }
        }
        Ok(claimed)
    }

    /// Records `applied` events (id, stream, version) and moves `streams` to their
    /// versions.
    pub(crate) async fn record(
        &self,
        tx: &mut PgTx,
        consumer: &str,
        applied: &[(Uuid, String, u64)],
        streams: &HashMap<String, u64>,
    ) -> sqlx::Result<()> {
        if applied.is_empty() && streams.is_empty() {
            return Ok(());
        }
        let (stream_ids, versions): (Vec<&str>, Vec<i64>) = streams
            .iter()
            .map(|(s, v)| (s.as_str(), i64_of(*v)))
            .unzip();
        sqlx::query(&self.record)
            .bind(consumer)
            .bind(applied.iter().map(|a| a.0).collect::<Vec<_>>())
            .bind(applied.iter().map(|a| a.1.as_str()).collect::<Vec<_>>())
            .bind(applied.iter().map(|a| i64_of(a.2)).collect::<Vec<_>>())
            .bind(stream_ids)
            .bind(versions)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Deletes inbox rows of `consumer` older than `before`, `batch` at a time; returns how
    /// many.
    pub(crate) async fn purge(
        &self,
        pool: &sqlx::PgPool,
        consumer: &str,
        before: DateTime<Utc>,
        batch: i64,
    ) -> sqlx::Result<u64> {
        let mut total = 0;
        loop {
            let done = sqlx::query(&self.purge)
                .bind(consumer)
                .bind(before)
                .bind(batch)
                .execute(pool)
                .await?
                .rows_affected();
            total += done;
            if done < u64::try_from(batch).unwrap_or_default() {
                return Ok(total);
            }
        }
    }
}
