//! Reads: streams, the global log, the head, and row decoding.

use annals_core::{
    Direction, Encoding, Error, Metadata, Position, ReadAll, ReadStream, RecordedEvent, Result,
};
use sqlx::{
    error::BoxDynError,
    postgres::{types::Oid, PgRow, PgTypeInfo, PgValueFormat, PgValueRef},
    Column, Decode, Postgres, Row, Type,
};

use crate::{error::from_sqlx, PgEventStore};

/// Clamps a version or count to Postgres' bigint.
pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64, column: &str) -> Result<u64> {
    u64::try_from(n)
        .map_err(|_| Error::backend(format!("negative {column} {n} in the events table")))
}

/// A `xid8` column decoded from PostgreSQL's binary form (a big-endian u64), so queries can
/// return `transaction_id` as it is stored instead of casting it through text on every row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Xid8(pub(crate) u64);

/// `xid8`'s fixed type OID (pg_type.dat); sqlx has no built-in type for it.
const XID8_OID: Oid = Oid(5069);

impl Type<Postgres> for Xid8 {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(XID8_OID)
    }
}

impl<'r> Decode<'r, Postgres> for Xid8 {
    fn decode(value: PgValueRef<'r>) -> std::result::Result<Self, BoxDynError> {
        Ok(Self(match value.format() {
            PgValueFormat::Binary => u64::from_be_bytes(value.as_bytes()?.try_into()?),
            PgValueFormat::Text => value.as_str()?.parse()?,
        }))
    }
}

/// Where each event column sits in a result set, looked up by name once per query instead
/// of once per field per row (those lookups were a visible share of decoding 10,000 rows).
/// A load for folding leaves out what folding does not read (`None`: the field is left
/// empty, see `SnapshotStore::load_stream_to_fold`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventColumns {
    global_position: usize,
    commit_id: usize,
    event_id: Option<usize>,
    stream_id: Option<usize>,
    stream_version: usize,
    event_type: usize,
    schema_version: usize,
    recorded_at: Option<usize>,
    metadata: Option<usize>,
    payload: usize,
    payload_bin: usize,
}

impl EventColumns {
    /// The ordinals in `row`'s result set (every read query names the same columns).
    pub(crate) fn of(row: &PgRow) -> Result<Self> {
        let at = |name: &str| row.try_column(name).map(Column::ordinal).map_err(from_sqlx);
        let optional = |name: &str| row.try_column(name).map(Column::ordinal).ok();
        Ok(Self {
            global_position: at("global_position")?,
            commit_id: at("commit_id")?,
            event_id: optional("event_id"),
            stream_id: optional("stream_id"),
            stream_version: at("stream_version")?,
            event_type: at("event_type")?,
            schema_version: at("schema_version")?,
            recorded_at: optional("recorded_at"),
            metadata: optional("metadata"),
            payload: at("payload")?,
            payload_bin: at("payload_bin")?,
        })
    }

    /// Decodes one events row (of stream `stream_id` when the row does not say).
    pub(crate) fn decode(&self, row: &PgRow, stream_id: &str) -> Result<RecordedEvent> {
        let get = |e: sqlx::Error| from_sqlx(e);
        let metadata: Option<String> = match self.metadata {
            Some(at) => row.try_get(at).map_err(get)?,
            None => None,
        };
        let metadata = match metadata {
            Some(json) => serde_json::from_str::<Metadata>(&json)
                .map_err(|e| Error::backend(format!("stored metadata is not valid: {e}")))?,
            None => Metadata::default(),
        };
        let json: Option<String> = row.try_get(self.payload).map_err(get)?;
        let (encoding, payload) = match json {
            Some(json) => (Encoding::Json, json.into_bytes()),
            None => {
                let bin: Option<Vec<u8>> = row.try_get(self.payload_bin).map_err(get)?;
                (Encoding::Postcard, bin.unwrap_or_default())
            }
        };
        let schema_version: i32 = row.try_get(self.schema_version).map_err(get)?;
        let commit: Xid8 = row.try_get(self.commit_id).map_err(get)?;
        Ok(RecordedEvent {
            event_id: match self.event_id {
                Some(at) => row.try_get(at).map_err(get)?,
                None => uuid::Uuid::nil(),
            },
            stream_id: match self.stream_id {
                Some(at) => row.try_get(at).map_err(get)?,
                None => stream_id.to_owned(),
            },
            stream_version: to_u64(
                row.try_get(self.stream_version).map_err(get)?,
                "stream_version",
            )?,
            position: Position::new(
                commit.0,
                to_u64(
                    row.try_get(self.global_position).map_err(get)?,
                    "global_position",
                )?,
            ),
            event_type: row.try_get(self.event_type).map_err(get)?,
            schema_version: u32::try_from(schema_version).unwrap_or_default(),
            recorded_at: match self.recorded_at {
                Some(at) => row.try_get(at).map_err(get)?,
                None => chrono::DateTime::UNIX_EPOCH,
            },
            metadata,
            encoding,
            payload,
        })
    }
}

/// Decodes a result set of events rows.
pub(crate) fn events_from_rows(rows: &[PgRow]) -> Result<Vec<RecordedEvent>> {
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let columns = EventColumns::of(first)?;
    rows.iter().map(|row| columns.decode(row, "")).collect()
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
        events_from_rows(&rows)
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
        events_from_rows(&rows)
    }

    pub(crate) async fn event_row(
        &self,
        stream_id: &str,
        event_id: uuid::Uuid,
    ) -> Result<Option<RecordedEvent>> {
        let rows = sqlx::query(&self.inner.sql.event_by_id)
            .bind(event_id)
            .bind(stream_id)
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?;
        Ok(events_from_rows(&rows)?.pop())
    }

    pub(crate) async fn position_at_time(
        &self,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Position> {
        let row = sqlx::query(&self.inner.sql.position_at)
            .bind(at)
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?;
        match row {
            None => self.head_position().await,
            Some(row) => {
                let commit: Option<Xid8> = row.try_get("commit_id").map_err(from_sqlx)?;
                let position: Option<i64> = row.try_get("global_position").map_err(from_sqlx)?;
                Ok(match (commit, position) {
                    (Some(commit), Some(position)) => {
                        Position::new(commit.0, to_u64(position, "global_position")?)
                    }
                    _ => Position::START,
                })
            }
        }
    }

    pub(crate) async fn head_position(&self) -> Result<Position> {
        let row = sqlx::query(&self.inner.sql.head)
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?;
        match row {
            None => Ok(Position::START),
            Some(row) => Ok(Position::new(
                row.try_get::<Xid8, _>("commit_id").map_err(from_sqlx)?.0,
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
