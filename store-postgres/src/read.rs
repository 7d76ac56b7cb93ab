//! Reads: streams, the global log, the head, and row decoding.

use annals_core::{
    Direction, Encoding, Error, Metadata, Position, ReadAll, ReadStream, RecordedEvent, Result,
};
use sqlx::{postgres::PgRow, Row};

use crate::{error::from_sqlx, PgEventStore};

/// Clamps a version or count to Postgres' bigint.
pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64, column: &str) -> Result<u64> {
    u64::try_from(n)
        .map_err(|_| Error::backend(format!("negative {column} {n} in the events table")))
}

/// Decodes an events row (the column list shared by the read queries).
pub(crate) fn event_from_row(row: &PgRow) -> Result<RecordedEvent> {
    let get = |e: sqlx::Error| from_sqlx(e);
    let metadata: Option<String> = row.try_get("metadata").map_err(get)?;
    let metadata = match metadata {
        Some(json) => serde_json::from_str::<Metadata>(&json)
            .map_err(|e| Error::backend(format!("stored metadata is not valid: {e}")))?,
        None => Metadata::default(),
    };
    let json: Option<String> = row.try_get("payload").map_err(get)?;
    let (encoding, payload) = match json {
        Some(json) => (Encoding::Json, json.into_bytes()),
        None => {
            let bin: Option<Vec<u8>> = row.try_get("payload_bin").map_err(get)?;
            (Encoding::Postcard, bin.unwrap_or_default())
        }
    };
    let schema_version: i32 = row.try_get("schema_version").map_err(get)?;
    Ok(RecordedEvent {
        event_id: row.try_get("event_id").map_err(get)?,
        stream_id: row.try_get("stream_id").map_err(get)?,
        stream_version: to_u64(
            row.try_get("stream_version").map_err(get)?,
            "stream_version",
        )?,
        position: Position::new(
            to_u64(row.try_get("commit_id").map_err(get)?, "transaction id")?,
            to_u64(
                row.try_get("global_position").map_err(get)?,
                "global_position",
            )?,
        ),
        event_type: row.try_get("event_type").map_err(get)?,
        schema_version: u32::try_from(schema_version).unwrap_or_default(),
        recorded_at: row.try_get("recorded_at").map_err(get)?,
        metadata,
        encoding,
        payload,
    })
}

impl PgEventStore {
    pub(crate) async fn read_stream_rows(
        &self,
        stream_id: &str,
        read: ReadStream,
    ) -> Result<Vec<RecordedEvent>> {
        let sql = match read.direction {
            Direction::Forward => &self.inner.sql.read_stream_forward,
            Direction::Backward => &self.inner.sql.read_stream_backward,
        };
        let rows = sqlx::query(sql)
            .bind(stream_id)
            .bind(to_i64(read.from))
            .bind(read.limit.map(|l| to_i64(l as u64)))
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?;
        rows.iter().map(event_from_row).collect()
    }

    pub(crate) async fn read_all_rows(&self, read: ReadAll) -> Result<Vec<RecordedEvent>> {
        let sql = match read.event_types {
            None => &self.inner.sql.read_all,
            Some(_) => &self.inner.sql.read_all_types,
        };
        let mut query = sqlx::query(sql)
            .bind(read.after.commit().to_string())
            .bind(to_i64(read.after.sequence()))
            .bind(to_i64(read.limit as u64));
        if let Some(types) = &read.event_types {
            query = query.bind(types);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(from_sqlx)?;
        rows.iter().map(event_from_row).collect()
    }

    pub(crate) async fn head_position(&self) -> Result<Position> {
        let row = sqlx::query(&self.inner.sql.head)
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?;
        match row {
            None => Ok(Position::START),
            Some(row) => Ok(Position::new(
                to_u64(
                    row.try_get("commit_id").map_err(from_sqlx)?,
                    "transaction id",
                )?,
                to_u64(
                    row.try_get("global_position").map_err(from_sqlx)?,
                    "global_position",
                )?,
            )),
        }
    }

    pub(crate) async fn version_of(&self, stream_id: &str) -> Result<u64> {
        let version: Option<i64> = sqlx::query_scalar(&self.inner.sql.stream_version)
            .bind(stream_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?;
        version.map_or(Ok(0), |v| to_u64(v, "stream version"))
    }
}
