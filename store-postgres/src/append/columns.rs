//! An append's request, checked and laid out as the columns the append statements bind.

use annals_core::{Encoding, Error, ExpectedVersion, NewEvent, Result, StreamAppend};
use sqlx::{postgres::PgArguments, query::QueryAs, Postgres};

/// The expected version as the statements take it: -1 any, -2 no stream, -3 stream
/// exists, n exactly n.
pub(super) fn expected_code(expected: ExpectedVersion) -> Result<i64> {
    Ok(match expected {
        ExpectedVersion::Any => -1,
        ExpectedVersion::NoStream => -2,
        ExpectedVersion::StreamExists => -3,
        ExpectedVersion::Exact(n) => i64::try_from(n)
            .map_err(|_| Error::InvalidInput(format!("expected version {n} is out of range")))?,
    })
}

/// An event's columns (the request passed [`check_appends`](annals_core::check_appends)):
/// its schema version as Postgres' integer, and its metadata as JSON text (`None` when
/// empty), with the current span's trace context when tracing is on.
pub(super) fn event_columns(event: &NewEvent) -> Result<(i32, Option<String>)> {
    let schema_version = i32::try_from(event.schema_version).map_err(|_| {
        Error::InvalidInput(format!(
            "schema version {} is out of range",
            event.schema_version
        ))
    })?;
    // An append made inside a traced span records its context (feature `otel`).
    let stamped = annals_core::trace::stamped(&event.metadata);
    let metadata = if stamped.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&*stamped).map_err(|e| Error::Encode {
            what: "event metadata".to_owned(),
            source: e.into(),
        })?)
    };
    Ok((schema_version, metadata))
}

/// The batch as the parallel arrays `append_streams` takes.
#[derive(Default)]
pub(super) struct Columns<'a> {
    pub(super) streams: Vec<&'a str>,
    pub(super) expected: Vec<i64>,
    pub(super) event_stream: Vec<i32>,
    pub(super) event_ids: Vec<uuid::Uuid>,
    event_types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    metadata: Vec<String>,
    is_json: Vec<bool>,
    payloads: Vec<&'a [u8]>,
}

impl<'a> Columns<'a> {
    pub(super) fn new(appends: &'a [StreamAppend]) -> Result<Self> {
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
            c.streams.push(&append.stream_id);
            c.expected.push(expected_code(append.expected)?);
            let stream_index = i32::try_from(index + 1)
                .map_err(|_| Error::InvalidInput("too many streams in one append".to_owned()))?;
            for event in &append.events {
                let (schema_version, metadata) = event_columns(event)?;
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
    pub(super) fn bind_events<'q, O>(
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
