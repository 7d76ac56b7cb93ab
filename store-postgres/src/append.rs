//! Appends: one statement (`append_events`) per call, whatever the number of streams and
//! events.

use annals_core::{
    AppendResult, Encoding, Error, ExpectedVersion, Position, Result, StreamAppend, StreamVersion,
};

use crate::{
    error::{from_append, from_sqlx},
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
            if append.stream_id.is_empty() {
                return Err(Error::InvalidInput("empty stream id".to_owned()));
            }
            c.streams.push(&append.stream_id);
            c.expected.push(expected_code(append.expected)?);
            let stream_index = i32::try_from(index + 1)
                .map_err(|_| Error::InvalidInput("too many streams in one append".to_owned()))?;
            for event in &append.events {
                if event.event_type.is_empty() {
                    return Err(Error::InvalidInput("empty event type".to_owned()));
                }
                event.encoding.validate(&event.payload)?;
                c.event_stream.push(stream_index);
                c.event_ids.push(event.event_id);
                c.event_types.push(&event.event_type);
                c.schema_versions
                    .push(i32::try_from(event.schema_version).map_err(|_| {
                        Error::InvalidInput(format!(
                            "schema version {} is out of range",
                            event.schema_version
                        ))
                    })?);
                c.metadata.push(if event.metadata.is_empty() {
                    String::new()
                } else {
                    serde_json::to_string(&event.metadata).map_err(|e| Error::Encode {
                        what: "event metadata".to_owned(),
                        source: e.into(),
                    })?
                });
                c.is_json.push(event.encoding == Encoding::Json);
                c.payloads.push(&event.payload);
            }
        }
        Ok(c)
    }
}

/// What the single-statement fast path concluded.
enum Fast {
    Done(AppendResult),
    Conflict(u64),
    /// Not decidable here (a missing stream under `Any`, a race): use `append_events`.
    Fallback,
}

impl PgEventStore {
    pub(crate) async fn append_batch(&self, appends: Vec<StreamAppend>) -> Result<AppendResult> {
        if appends.is_empty() {
            return Ok(AppendResult {
                position: self.head_position().await?,
                streams: Vec::new(),
            });
        }
        let c = Columns::new(&appends)?;
        if let [append] = appends.as_slice() {
            if !append.events.is_empty() {
                match self.append_one(append, &c).await? {
                    Fast::Done(result) => {
                        self.inner.wakeups.appended(self.inner.options.notify);
                        return Ok(result);
                    }
                    Fast::Conflict(actual) => {
                        return Err(Error::Conflict {
                            stream_id: append.stream_id.clone(),
                            expected: append.expected,
                            actual,
                        })
                    }
                    Fast::Fallback => {}
                }
            }
        }
        let (versions, commit_id, last_position): (Vec<i64>, Option<i64>, Option<i64>) =
            sqlx::query_as(&self.inner.sql.append)
                .bind(&c.streams)
                .bind(&c.expected)
                .bind(&c.event_stream)
                .bind(&c.event_ids)
                .bind(&c.event_types)
                .bind(&c.schema_versions)
                .bind(&c.metadata)
                .bind(&c.is_json)
                .bind(&c.payloads)
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

    /// One statement for the common case, one stream: an UPDATE (or, for a new stream, an
    /// INSERT) of its row and the INSERT of its events, with no plpgsql call.
    async fn append_one(&self, append: &StreamAppend, c: &Columns<'_>) -> Result<Fast> {
        let count = c.event_ids.len() as i64;
        let creating = matches!(
            append.expected,
            ExpectedVersion::NoStream | ExpectedVersion::Exact(0)
        );
        let query = if creating {
            sqlx::query_as(&self.inner.sql.append_new)
                .bind(&append.stream_id)
                .bind(count)
        } else {
            sqlx::query_as(&self.inner.sql.append_existing)
                .bind(&append.stream_id)
                .bind(count)
                .bind(c.expected[0])
        };
        let (base, last_position, commit_id): (Option<i64>, Option<i64>, i64) = query
            .bind(&c.event_ids)
            .bind(&c.event_types)
            .bind(&c.schema_versions)
            .bind(&c.metadata)
            .bind(&c.is_json)
            .bind(&c.payloads)
            .fetch_one(&self.pool)
            .await
            .map_err(from_sqlx)?;
        if let (Some(base), Some(last)) = (base, last_position) {
            return Ok(Fast::Done(AppendResult {
                position: Position::new(commit_id as u64, last as u64),
                streams: vec![StreamVersion {
                    stream_id: append.stream_id.clone(),
                    version: (base + count) as u64,
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
