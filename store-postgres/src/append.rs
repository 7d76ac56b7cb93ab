//! Appends. One event, or several events to one stream, go through one plain SQL statement
//! (`sql/append_*.sql`); several streams, and what that statement cannot decide (a missing
//! stream under `Any`, a race), go through the `append_events` function.

use annals_core::{
    AppendResult, Encoding, Error, ExpectedVersion, NewEvent, Position, Result, StreamAppend,
    StreamVersion,
};

use sqlx::{postgres::PgArguments, query::QueryAs, Postgres};

use crate::{
    error::{from_append, from_sqlx},
    read::Xid8,
    PgEventStore,
};

/// The batch as the parallel arrays `append_events` takes.
#[derive(Default)]
struct Columns<'a> {
    streams: Vec<&'a str>,
    expected: Vec<i64>,
    event_stream: Vec<i32>,
    event_ids: Vec<uuid::Uuid>,
    event_types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    metadata: Vec<String>,
    is_json: Vec<bool>,
    payloads: Vec<&'a [u8]>,
}

fn expected_code(expected: ExpectedVersion) -> Result<i64> {
    Ok(match expected {
        ExpectedVersion::Any => -1,
        ExpectedVersion::NoStream => -2,
        ExpectedVersion::StreamExists => -3,
        ExpectedVersion::Exact(n) => i64::try_from(n)
            .map_err(|_| Error::InvalidInput(format!("expected version {n} is out of range")))?,
    })
}

/// An event's checked columns: its schema version as Postgres' integer, and its metadata as
/// JSON text (`None` when empty).
fn checked_columns(event: &NewEvent) -> Result<(i32, Option<String>)> {
    if event.event_type.is_empty() {
        return Err(Error::InvalidInput("empty event type".to_owned()));
    }
    event.encoding.validate(&event.payload)?;
    let schema_version = i32::try_from(event.schema_version).map_err(|_| {
        Error::InvalidInput(format!(
            "schema version {} is out of range",
            event.schema_version
        ))
    })?;
    let metadata = if event.metadata.is_empty() {
        None
    } else {
        Some(
            serde_json::to_string(&event.metadata).map_err(|e| Error::Encode {
                what: "event metadata".to_owned(),
                source: e.into(),
            })?,
        )
    };
    Ok((schema_version, metadata))
}

fn check_stream_id(append: &StreamAppend) -> Result<()> {
    if append.stream_id.is_empty() {
        return Err(Error::InvalidInput("empty stream id".to_owned()));
    }
    Ok(())
}

impl<'a> Columns<'a> {
    fn new(appends: &'a [StreamAppend]) -> Result<Self> {
        let events: usize = appends.iter().map(|a| a.events.len()).sum();
        let mut c = Columns {
            streams: Vec::with_capacity(appends.len()),
            expected: Vec::with_capacity(appends.len()),
            event_stream: Vec::with_capacity(events),
            event_ids: Vec::with_capacity(events),
            event_types: Vec::with_capacity(events),
            schema_versions: Vec::with_capacity(events),
            metadata: Vec::with_capacity(events),
            is_json: Vec::with_capacity(events),
            payloads: Vec::with_capacity(events),
        };
        for (index, append) in appends.iter().enumerate() {
            check_stream_id(append)?;
            c.streams.push(&append.stream_id);
            c.expected.push(expected_code(append.expected)?);
            let stream_index = i32::try_from(index + 1)
                .map_err(|_| Error::InvalidInput("too many streams in one append".to_owned()))?;
            for event in &append.events {
                let (schema_version, metadata) = checked_columns(event)?;
                c.event_stream.push(stream_index);
                c.event_ids.push(event.event_id);
                c.event_types.push(&event.event_type);
                c.schema_versions.push(schema_version);
                c.metadata.push(metadata.unwrap_or_default());
                c.is_json.push(event.encoding == Encoding::Json);
                c.payloads.push(&event.payload);
            }
        }
        Ok(c)
    }

    /// Binds the per-event arrays, in the order every append statement takes them.
    fn bind_events<'q, O>(
        &'q self,
        query: QueryAs<'q, Postgres, O, PgArguments>,
    ) -> QueryAs<'q, Postgres, O, PgArguments> {
        query
            .bind(&self.event_ids)
            .bind(&self.event_types)
            .bind(&self.schema_versions)
            .bind(&self.metadata)
            .bind(&self.is_json)
            .bind(&self.payloads)
    }
}

/// What the single-statement fast path concluded.
enum Fast {
    Done(AppendResult),
    Conflict(u64),
    /// Not decidable here (a missing stream under `Any`, a race): use `append_events`.
    Fallback,
}

/// What a single-statement fast path returned: the stream's new version, the last event's
/// position and the commit id; `None` when the statement refused the append.
type FastRow = Option<(i64, i64, Xid8)>;

impl PgEventStore {
    pub(crate) async fn append_batch(&self, appends: Vec<StreamAppend>) -> Result<AppendResult> {
        if appends.is_empty() {
            return Ok(AppendResult {
                position: self.head_position().await?,
                streams: Vec::new(),
            });
        }
        // Built once: the one-stream path and the general one (its fallback) both bind it.
        let mut columns = None;
        if let [append] = appends.as_slice() {
            let fast = match append.events.as_slice() {
                [] => None,
                [event] => Some(self.append_one_event(append, event).await?),
                _ => {
                    let c = columns.insert(Columns::new(&appends)?);
                    Some(self.append_one_stream(append, c).await?)
                }
            };
            match fast {
                Some(Fast::Done(result)) => {
                    self.inner.wakeups.appended(self.inner.options.notify);
                    return Ok(result);
                }
                Some(Fast::Conflict(actual)) => {
                    return Err(Error::Conflict {
                        stream_id: append.stream_id.clone(),
                        expected: append.expected,
                        actual,
                    })
                }
                Some(Fast::Fallback) | None => {}
            }
        }
        let c = match columns {
            Some(c) => c,
            None => Columns::new(&appends)?,
        };
        let query = sqlx::query_as(&self.inner.sql.append)
            .bind(&c.streams)
            .bind(&c.expected)
            .bind(&c.event_stream);
        let (versions, commit_id, last_position): (Vec<i64>, Option<i64>, Option<i64>) = c
            .bind_events(query)
            // NOTIFY happens after commit, outside this statement (see listen.rs).
            .bind(false)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| from_append(e, &appends))?;
        let position = match (commit_id, last_position) {
            (Some(commit), Some(last)) => {
                self.inner.wakeups.appended(self.inner.options.notify);
                Position::new(commit as u64, last as u64)
            }
            _ => self.head_position().await?,
        };
        let streams = appends
            .into_iter()
            .zip(versions)
            .map(|(append, version)| StreamVersion {
                stream_id: append.stream_id,
                version: u64::try_from(version).unwrap_or_default(),
            })
            .collect();
        Ok(AppendResult { position, streams })
    }

    /// Whether one stream is being created by this append (so the fast path inserts its row
    /// rather than updating it).
    fn creates(append: &StreamAppend) -> bool {
        matches!(
            append.expected,
            ExpectedVersion::NoStream | ExpectedVersion::Exact(0)
        )
    }

    /// The commonest append, one event to one stream, as one statement with scalar
    /// parameters.
    async fn append_one_event(&self, append: &StreamAppend, event: &NewEvent) -> Result<Fast> {
        check_stream_id(append)?;
        let (schema_version, metadata) = checked_columns(event)?;
        let (json, binary) = if event.encoding == Encoding::Json {
            let text = std::str::from_utf8(&event.payload)
                .map_err(|e| Error::InvalidInput(format!("JSON payload is not UTF-8: {e}")))?;
            (Some(text), None)
        } else {
            (None, Some(event.payload.as_slice()))
        };
        let query = if Self::creates(append) {
            sqlx::query_as(&self.inner.sql.append_new_one).bind(&append.stream_id)
        } else {
            sqlx::query_as(&self.inner.sql.append_existing_one)
                .bind(&append.stream_id)
                .bind(expected_code(append.expected)?)
        };
        let row: FastRow = query
            .bind(event.event_id)
            .bind(&event.event_type)
            .bind(schema_version)
            .bind(metadata)
            .bind(json)
            .bind(binary)
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?;
        self.fast_outcome(append, row).await
    }

    /// Several events to one stream: an UPDATE (or, for a new stream, an INSERT) of its row
    /// and the INSERT of its events in one statement, with no plpgsql call.
    async fn append_one_stream(&self, append: &StreamAppend, c: &Columns<'_>) -> Result<Fast> {
        let count = c.event_ids.len() as i64;
        let query = if Self::creates(append) {
            sqlx::query_as(&self.inner.sql.append_new)
                .bind(&append.stream_id)
                .bind(count)
        } else {
            sqlx::query_as(&self.inner.sql.append_existing)
                .bind(&append.stream_id)
                .bind(count)
                .bind(c.expected[0])
        };
        let (base, last_position, commit_id): (Option<i64>, Option<i64>, Xid8) = c
            .bind_events(query)
            .fetch_one(&self.pool)
            .await
            .map_err(from_sqlx)?;
        let row = base
            .zip(last_position)
            .map(|(base, last)| (base + count, last, commit_id));
        self.fast_outcome(append, row).await
    }

    async fn fast_outcome(&self, append: &StreamAppend, row: FastRow) -> Result<Fast> {
        if let Some((version, last, commit_id)) = row {
            return Ok(Fast::Done(AppendResult {
                position: Position::new(commit_id.0, last as u64),
                streams: vec![StreamVersion {
                    stream_id: append.stream_id.clone(),
                    version: version as u64,
                }],
            }));
        }
        // Refused: report the version that refused it, unless it now satisfies the
        // expectation (a race, or a missing stream under `Any`): then take the general path.
        let actual = self.version_of(&append.stream_id).await?;
        if append.expected.matches(actual) {
            Ok(Fast::Fallback)
        } else {
            Ok(Fast::Conflict(actual))
        }
    }
}
