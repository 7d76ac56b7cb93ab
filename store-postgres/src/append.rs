//! Appends. One event, or several events to one stream, go through one plain SQL statement
//! (`sql/append_*.sql`); several streams, appends inside a caller's transaction, and what
//! that statement cannot decide (a missing stream under `Any`, a race) go through the
//! `append_streams` function. Both keep each stream in version order in the log (see
//! migration 0005), and answer a repeated append with its original result.

mod columns;
mod group;
mod repeat;

pub(crate) use self::group::GroupCommit;
pub use self::group::OutcomeUnknown;

use annals_core::{
    check_appends, AppendResult, Encoding, Error, ExpectedVersion, NewEvent, Position, Result,
    StreamAppend, StreamVersion,
};
use sqlx::{
    postgres::{PgArguments, PgRow},
    query::QueryAs,
    FromRow, PgConnection, PgPool, Postgres,
};

use self::columns::{event_columns, expected_code, Columns};
use crate::{
    error::{from_sqlx, is_duplicate_event_id},
    read::Xid8,
    PgEventStore,
};

/// Where an append's statements run: the store's pool (each statement commits on its own)
/// or a connection inside the caller's transaction.
pub(crate) enum On<'c> {
    Pool(&'c PgPool),
    Conn(&'c mut PgConnection),
}

impl On<'_> {
    async fn fetch_optional<'q, O>(
        &mut self,
        query: QueryAs<'q, Postgres, O, PgArguments>,
    ) -> sqlx::Result<Option<O>>
    where
        O: Send + Unpin + for<'r> FromRow<'r, PgRow>,
    {
        match self {
            On::Pool(pool) => query.fetch_optional(*pool).await,
            On::Conn(conn) => query.fetch_optional(&mut **conn).await,
        }
    }

    async fn fetch_all<'q, O>(
        &mut self,
        query: QueryAs<'q, Postgres, O, PgArguments>,
    ) -> sqlx::Result<Vec<O>>
    where
        O: Send + Unpin + for<'r> FromRow<'r, PgRow>,
    {
        match self {
            On::Pool(pool) => query.fetch_all(*pool).await,
            On::Conn(conn) => query.fetch_all(&mut **conn).await,
        }
    }

    async fn fetch_one<'q, O>(
        &mut self,
        query: QueryAs<'q, Postgres, O, PgArguments>,
    ) -> sqlx::Result<O>
    where
        O: Send + Unpin + for<'r> FromRow<'r, PgRow>,
    {
        match self {
            On::Pool(pool) => query.fetch_one(*pool).await,
            On::Conn(conn) => query.fetch_one(&mut **conn).await,
        }
    }

    fn in_caller_transaction(&self) -> bool {
        matches!(self, On::Conn(_))
    }
}

/// What an append did: wrote its events, or found them already stored by an earlier
/// identical append (and returns that one's result).
pub(crate) struct Appended {
    pub(crate) result: AppendResult,
    pub(crate) wrote: bool,
}

impl Appended {
    fn wrote(result: AppendResult) -> Self {
        Self {
            result,
            wrote: true,
        }
    }
}

/// What a single-statement fast path concluded.
enum Fast {
    Done(AppendResult),
    Conflict(u64),
    /// The first event id is stored: a repeat, or a misuse of ids.
    Stored,
    /// A later event id is stored (the statement failed on its unique index): a misuse of
    /// ids, or an identical append that committed while this one waited.
    Raced,
    /// Not decidable here (a missing stream under `Any`, a race, an older caller
    /// transaction): use `append_streams`.
    Fallback,
}

/// How often an append on the pool is retried when a younger single-statement append
/// wrote one of its streams between its locks and its write (each retry is a new, younger
/// transaction; a second refusal needs another such race on the same stream).
const STALE_RETRIES: u32 = 16;

/// What `append_streams` returned: each stream's new version, the commit id and the last
/// event's position (`None` when nothing was written), and whether the events were already
/// stored.
type FunctionRow = (Option<Vec<i64>>, Option<Xid8>, Option<i64>, bool);

/// What a single-statement fast path returned: the stream's new version, the last event's
/// position and the commit id; `None` when the statement refused the append.
type FastRow = Option<(i64, i64, Xid8)>;

/// Whether one stream is being created by this append (so the fast path inserts its row
/// rather than updating it).
fn creates(append: &StreamAppend) -> bool {
    matches!(
        append.expected,
        ExpectedVersion::NoStream | ExpectedVersion::Exact(0)
    )
}

impl PgEventStore {
    /// Appends on `on`; see [`EventStore::append`](annals_core::EventStore::append).
    pub(crate) async fn append_on(
        &self,
        mut on: On<'_>,
        appends: &[StreamAppend],
    ) -> Result<Appended> {
        check_appends(appends)?;
        if appends.is_empty() {
            return Ok(Appended {
                result: AppendResult {
                    position: self.head_position().await?,
                    streams: Vec::new(),
                },
                wrote: false,
            });
        }
        // Built once: the one-stream path and the general one (its fallback) both bind it.
        let mut columns = None;
        // The single statements run in a transaction of their own. In a caller's transaction
        // a refused one could keep the row lock it waited for while the fallback then waits
        // for another append's stream locks (a deadlock): there, appends take the
        // function's path, stream locks first.
        if let (false, [append]) = (on.in_caller_transaction(), appends) {
            let fast = match append.events.as_slice() {
                [] => None,
                [event] => Some(self.append_one_event(&mut on, append, event).await),
                _ => {
                    let c = columns.insert(Columns::new(appends)?);
                    Some(self.append_one_stream(&mut on, append, c).await)
                }
            };
            match fast.transpose()? {
                Some(Fast::Done(result)) => return Ok(Appended::wrote(result)),
                Some(Fast::Conflict(actual)) => {
                    return Err(Error::Conflict {
                        stream_id: append.stream_id.clone(),
                        expected: append.expected,
                        actual,
                    })
                }
                Some(Fast::Stored) => return self.repeated(&mut on, appends).await,
                Some(Fast::Raced) => return self.raced(&on, appends).await,
                Some(Fast::Fallback) | None => {}
            }
        }
        let c = match columns {
            Some(c) => c,
            None => Columns::new(appends)?,
        };
        let mut refusals = 0;
        let (versions, commit_id, last_position, repeated) = loop {
            let query = sqlx::query_as(&self.inner.sql.append)
                .bind(&c.streams)
                .bind(&c.expected)
                .bind(&c.event_stream);
            let row: sqlx::Result<FunctionRow> = on.fetch_one(c.bind_events(query)).await;
            match row {
                Ok(row) => break row,
                Err(e) if is_duplicate_event_id(&e) => return self.raced(&on, appends).await,
                Err(e) => match crate::error::from_append(e, appends) {
                    // On the pool each attempt is a transaction of its own, younger than
                    // the single-statement append that got to a stream between taking
                    // our locks and writing it: retry.
                    Error::StaleTransaction { .. }
                        if !on.in_caller_transaction() && refusals < STALE_RETRIES =>
                    {
                        refusals += 1;
                    }
                    error => return Err(error),
                },
            }
        };
        if repeated {
            return self.repeated(&mut on, appends).await;
        }
        let (position, wrote) = match (commit_id, last_position) {
            (Some(commit), Some(last)) => (Position::new(commit.0, last as u64), true),
            _ => (self.head_position().await?, false),
        };
        let streams = appends
            .iter()
            .zip(versions.unwrap_or_default())
            .map(|(append, version)| StreamVersion {
                stream_id: append.stream_id.clone(),
                version: u64::try_from(version).unwrap_or_default(),
            })
            .collect();
        Ok(Appended {
            result: AppendResult { position, streams },
            wrote,
        })
    }

    /// The commonest append, one event to one stream, as one statement with scalar
    /// parameters.
    async fn append_one_event(
        &self,
        on: &mut On<'_>,
        append: &StreamAppend,
        event: &NewEvent,
    ) -> Result<Fast> {
        let (schema_version, metadata) = event_columns(event)?;
        let (json, binary) = if event.encoding == Encoding::Json {
            let text = std::str::from_utf8(&event.payload)
                .map_err(|e| Error::InvalidInput(format!("JSON payload is not UTF-8: {e}")))?;
            (Some(text), None)
        } else {
            (None, Some(event.payload.as_slice()))
        };
        let query = if creates(append) {
            sqlx::query_as(&self.inner.sql.append_new_one).bind(&append.stream_id)
        } else {
            sqlx::query_as(&self.inner.sql.append_existing_one)
                .bind(&append.stream_id)
                .bind(expected_code(append.expected)?)
        };
        let row: FastRow = match on
            .fetch_optional(
                query
                    .bind(event.event_id)
                    .bind(&event.event_type)
                    .bind(schema_version)
                    .bind(metadata)
                    .bind(json)
                    .bind(binary),
            )
            .await
        {
            Ok(row) => row,
            Err(e) if is_duplicate_event_id(&e) => return Ok(Fast::Raced),
            Err(e) => return Err(from_sqlx(e)),
        };
        self.fast_outcome(on, append, row).await
    }

    /// Several events to one stream: an UPDATE (or, for a new stream, an INSERT) of its row
    /// and the INSERT of its events in one statement, with no plpgsql call.
    async fn append_one_stream(
        &self,
        on: &mut On<'_>,
        append: &StreamAppend,
        c: &Columns<'_>,
    ) -> Result<Fast> {
        let count = c.event_ids.len() as i64;
        let query = if creates(append) {
            sqlx::query_as(&self.inner.sql.append_new)
                .bind(&append.stream_id)
                .bind(count)
        } else {
            sqlx::query_as(&self.inner.sql.append_existing)
                .bind(&append.stream_id)
                .bind(count)
                .bind(c.expected[0])
        };
        let row: sqlx::Result<(Option<i64>, Option<i64>, Option<Xid8>)> =
            on.fetch_one(c.bind_events(query)).await;
        let (base, last_position, commit_id) = match row {
            Ok(row) => row,
            Err(e) if is_duplicate_event_id(&e) => return Ok(Fast::Raced),
            Err(e) => return Err(from_sqlx(e)),
        };
        let row = match (base, last_position, commit_id) {
            (Some(base), Some(last), Some(commit)) => Some((base + count, last, commit)),
            _ => None,
        };
        self.fast_outcome(on, append, row).await
    }

    async fn fast_outcome(
        &self,
        on: &mut On<'_>,
        append: &StreamAppend,
        row: FastRow,
    ) -> Result<Fast> {
        if let Some((version, last, commit_id)) = row {
            return Ok(Fast::Done(AppendResult {
                position: Position::new(commit_id.0, last as u64),
                streams: vec![StreamVersion {
                    stream_id: append.stream_id.clone(),
                    version: version as u64,
                }],
            }));
        }
        // Refused: a repeat if the first event is stored; otherwise report the version
        // that refused it, unless it now satisfies the expectation (a race, a missing
        // stream under `Any`, an older caller transaction): then take the general path.
        let first = append.events.first().map(|e| e.event_id);
        let (version, stored): (Option<i64>, bool) = on
            .fetch_one(
                sqlx::query_as(&self.inner.sql.refused)
                    .bind(&append.stream_id)
                    .bind(first),
            )
            .await
            .map_err(from_sqlx)?;
        let actual = u64::try_from(version.unwrap_or(0)).unwrap_or_default();
        Ok(if stored {
            Fast::Stored
        } else if append.expected.matches(actual) {
            Fast::Fallback
        } else {
            Fast::Conflict(actual)
        })
    }
}

impl PgEventStore {
    /// Appends inside a transaction the caller opened: the transactional outbox. The events
    /// commit or roll back with the caller's own writes (`UPDATE orders ...`), and keep every
    /// promise of [`append`](annals_core::EventStore::append): optimistic concurrency, gap-free
    /// tailing, per-stream order, idempotence by event id.
    ///
    /// Pass the connection of a transaction begun on this store's database (any pool, for
    /// instance [`pool`](PgEventStore::pool)). The streams stay locked until that transaction
    /// ends, as their rows would. When `notify` is on (the default), a NOTIFY is queued in the
    /// same transaction, so tailing readers (a relay) wake up when it commits, and not at all
    /// if it rolls back; notifying transactions commit one at a time, which is the price of
    /// that immediacy (turn it off with [`PgStoreOptions::notify`](crate::PgStoreOptions::notify)
    /// and readers find the events on their next poll).
    ///
    /// If the events are already stored by an earlier transaction with the same streams and
    /// order (a retry after a lost COMMIT reply), nothing is written and the original result
    /// is returned; the rest of the caller's transaction is the caller's to make idempotent.
    ///
    /// ```no_run
    /// use annals_core::{Encoding, ExpectedVersion, NewEvent, StreamAppend};
    /// # async fn demo(store: annals_store_postgres::PgEventStore) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = store.pool().begin().await?;
    /// sqlx::query("UPDATE orders SET state = 'paid' WHERE id = $1")
    ///     .bind(42_i64)
    ///     .execute(&mut *tx)
    ///     .await?;
    /// let paid = NewEvent::new("order-paid", 1, Encoding::Json, br#"{"order":42}"#.to_vec());
    /// store
    ///     .append_in(&mut tx, vec![StreamAppend::new("order-42", ExpectedVersion::Any, vec![paid])])
    ///     .await?;
    /// tx.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`append`](annals_core::EventStore::append), plus
    /// [`Error::StaleTransaction`] when the transaction wrote something before this append
    /// and a younger transaction wrote one of the streams since (appending would list this
    /// transaction's events before that stream's earlier versions): roll back and retry.
    /// After an error other than a conflict the transaction may be aborted; roll it back.
    #[tracing::instrument(
        name = "annals.append",
        skip_all,
        fields(store = "postgres", in_transaction = true, streams = appends.len())
    )]
    pub async fn append_in(
        &self,
        conn: &mut PgConnection,
        appends: Vec<StreamAppend>,
    ) -> Result<AppendResult> {
        let appended = self.append_on(On::Conn(&mut *conn), &appends).await?;
        if appended.wrote && self.inner.options.notify {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(self.inner.wakeups.channel())
                .execute(&mut *conn)
                .await
                .map_err(from_sqlx)?;
        }
        Ok(appended.result)
    }
}
