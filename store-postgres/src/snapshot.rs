//! Snapshots, and loading an aggregate's snapshot plus tail in one query.

use annals_core::{Encoding, ReadStream, RecordedEvent, Result, Snapshot, SnapshotStore};
use sqlx::{Column, Row};
use tracing::warn;

use crate::{
    error::from_sqlx,
    read::{to_i64, EventColumns},
    PgEventStore,
};

fn snapshot_from(
    stream_id: &str,
    aggregate_type: &str,
    schema_version: u32,
    stream_version: i64,
    encoding: &str,
    payload: Vec<u8>,
    taken_at: chrono::DateTime<chrono::Utc>,
) -> Option<Snapshot> {
    let Some(encoding) = Encoding::from_name(encoding) else {
        warn!(
            stream_id,
            encoding, "snapshot has an unknown encoding; ignoring it"
        );
        return None;
    };
    Some(Snapshot {
        stream_id: stream_id.to_owned(),
        aggregate_type: aggregate_type.to_owned(),
        schema_version,
        stream_version: u64::try_from(stream_version).ok()?,
        encoding,
        payload,
        taken_at,
    })
}

impl SnapshotStore for PgEventStore {
    async fn load_snapshot(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        schema_version: u32,
    ) -> Result<Option<Snapshot>> {
        self.on_live_connection(|| async move {
            let row = sqlx::query(&self.inner.sql.load_snapshot)
                .bind(stream_id)
                .bind(aggregate_type)
                .bind(schema_version as i32)
                .fetch_optional(&self.pool)
                .await
                .map_err(from_sqlx)?;
            let Some(row) = row else { return Ok(None) };
            Ok(snapshot_from(
                stream_id,
                aggregate_type,
                schema_version,
                row.try_get("stream_version").map_err(from_sqlx)?,
                row.try_get("encoding").map_err(from_sqlx)?,
                row.try_get("payload").map_err(from_sqlx)?,
                row.try_get("taken_at").map_err(from_sqlx)?,
            ))
        })
        .await
    }

    #[tracing::instrument(name = "annals.snapshot.save", skip_all, fields(store = "postgres", stream = %snapshot.stream_id, version = snapshot.stream_version))]
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<bool> {
        // Idempotent: a snapshot replaces only an older one.
        let snapshot = &snapshot;
        self.on_live_connection(|| async move {
            let done = sqlx::query(&self.inner.sql.save_snapshot)
                .bind(&snapshot.stream_id)
                .bind(&snapshot.aggregate_type)
                .bind(snapshot.schema_version as i32)
                .bind(to_i64(snapshot.stream_version))
                .bind(snapshot.encoding.name())
                .bind(&snapshot.payload)
                .bind(snapshot.taken_at)
                .execute(&self.pool)
                .await
                .map_err(from_sqlx)?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    #[tracing::instrument(name = "annals.load_stream", skip_all, fields(store = "postgres", stream = stream_id))]
    async fn load_stream(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        schema_version: u32,
    ) -> Result<(Option<Snapshot>, Vec<RecordedEvent>)> {
        self.load_stream_with(
            &self.inner.sql.load_stream,
            stream_id,
            aggregate_type,
            schema_version,
        )
        .await
    }

    #[tracing::instrument(name = "annals.load_stream", skip_all, fields(store = "postgres", stream = stream_id, to_fold = true))]
    async fn load_stream_to_fold(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        schema_version: u32,
    ) -> Result<(Option<Snapshot>, Vec<RecordedEvent>)> {
        self.load_stream_with(
            &self.inner.sql.load_stream_to_fold,
            stream_id,
            aggregate_type,
            schema_version,
        )
        .await
    }
}

impl PgEventStore {
    /// A snapshot and the events after it, by `sql` (`load_stream.sql` or its leaner
    /// `load_stream_to_fold.sql`).
    async fn load_stream_with(
        &self,
        sql: &str,
        stream_id: &str,
        aggregate_type: &str,
        schema_version: u32,
    ) -> Result<(Option<Snapshot>, Vec<RecordedEvent>)> {
        let rows = self
            .on_live_connection(|| async {
                sqlx::query(sql)
                    .bind(stream_id)
                    .bind(aggregate_type)
                    .bind(schema_version as i32)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(from_sqlx)
            })
            .await?;
        let mut snapshot = None;
        let mut unusable_snapshot = false;
        let Some(first) = rows.first() else {
            return Ok((None, Vec::new()));
        };
        let columns = EventColumns::of(first)?;
        let is_snapshot = first
            .try_column("is_snapshot")
            .map(Column::ordinal)
            .map_err(from_sqlx)?;
        // The lean query names the snapshot's time `taken_at` (its events have none).
        let taken_at = first
            .try_column("taken_at")
            .or_else(|_| first.try_column("recorded_at"))
            .map(Column::ordinal)
            .map_err(from_sqlx)?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            if row.try_get::<bool, _>(is_snapshot).map_err(from_sqlx)? {
                snapshot = snapshot_from(
                    stream_id,
                    aggregate_type,
                    schema_version,
                    row.try_get("stream_version").map_err(from_sqlx)?,
                    row.try_get("event_type").map_err(from_sqlx)?,
                    row.try_get::<Option<Vec<u8>>, _>("payload_bin")
                        .map_err(from_sqlx)?
                        .unwrap_or_default(),
                    row.try_get(taken_at).map_err(from_sqlx)?,
                );
                let head: Option<i64> = row.try_get("head_version").map_err(from_sqlx)?;
                let head = head.map_or(0, |v| u64::try_from(v).unwrap_or_default());
                if snapshot.as_ref().is_some_and(|s| s.stream_version > head) {
                    warn!(
                        stream_id,
                        head, "snapshot claims a version past the end of its stream; replaying"
                    );
                    snapshot = None;
                }
                unusable_snapshot = snapshot.is_none();
            } else {
                events.push(columns.decode(row, stream_id)?);
            }
        }
        if unusable_snapshot {
            // The events after a snapshot we cannot use are not the whole stream.
            events = self
                .on_live_connection(|| self.read_stream_rows(stream_id, ReadStream::all()))
                .await?;
        } else if !events.is_sorted_by_key(|e| e.stream_version) {
            // The query leaves the union unsorted; Postgres returns it in order in practice.
            events.sort_by_key(|e| e.stream_version);
        }
        Ok((snapshot, events))
    }
}
