//! Group commit: concurrent one-stream appends from this process share one transaction and
//! one call of `append_group` (migration 0011), each with its own outcome.
//!
//! One committer task per store takes what is queued, commits it, answers every caller,
//! and takes what queued meanwhile: no timer, so a lone append waits for nobody, and the
//! busier the store, the larger the groups. A group that fails as a whole (a malformed
//! payload in one request, a lost connection) is never answered with its error: each
//! caller appends its own events again on the ordinary path, which is idempotent by event
//! id, so an append the failed commit did store is answered with its original result and
//! one it did not is written now (or gets its own error).

use std::{sync::Arc, time::Duration};

use annals_core::{
    check_appends, AppendResult, Error, Position, Result, StreamAppend, StreamVersion,
};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex};
use tracing::{debug, warn, Instrument};

use super::{
    columns::{event_columns, expected_code},
    Appended, On,
};
use crate::{
    error::{connection_broke, from_sqlx, lost_connection},
    read::Xid8,
    PgEventStore,
};

/// At most this many requests in one group (a bound on the statement's size and on how
/// long the first caller of a burst waits for the others' rows).
const MAX_REQUESTS: usize = 256;

/// A group stops taking requests once it holds this many events.
const MAX_EVENTS: usize = 4096;

/// How often a group that met a concurrent single-statement append on one of its streams
/// (AN413, nothing written) is run again before its callers append on their own.
const RACED_RETRIES: u32 = 4;

/// How often an append whose group commit was lost with its connection (outcome unknown)
/// is tried again on the ordinary path, and the pause before each try.
const UNKNOWN_RETRIES: [Duration; 3] = [
    Duration::from_millis(20),
    Duration::from_millis(200),
    Duration::from_secs(1),
];

/// The committer's queue; dropping it (with the store) ends the committer.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    queue: mpsc::UnboundedSender<Request>,
}

impl GroupCommit {
    /// Starts `committers` committers on one queue (call inside a tokio runtime).
    pub(crate) fn start(pool: PgPool, sql: String, committers: usize) -> Self {
        let (queue, requests) = mpsc::unbounded_channel();
        let requests = Arc::new(Mutex::new(requests));
        let sql: Arc<str> = sql.into();
        // Registered once, not looked up per group.
        let sizes = metrics::histogram!("annals_group_commit_requests");
        for _ in 0..committers.max(1) {
            tokio::spawn(commit_groups(
                pool.clone(),
                Arc::clone(&sql),
                Arc::clone(&requests),
                sizes.clone(),
            ));
        }
        Self { queue }
    }
}

/// One caller's append, with what its own task must compute (the trace context stamped
/// into metadata belongs to the caller's span, not the committer's).
struct Request {
    append: Arc<StreamAppend>,
    expected: i64,
    schema_versions: Vec<i32>,
    metadata: Vec<String>,
    reply: oneshot::Sender<Reply>,
}

/// What the group said about one request.
#[derive(Clone, Copy, Debug)]
enum Reply {
    Written {
        version: u64,
        last_position: u64,
        commit: u64,
    },
    Conflict(u64),
    /// Its first event id is stored.
    Stored,
    /// Another of its event ids is stored.
    Raced,
    /// A younger transaction wrote its stream first: append again in a new transaction.
    Stale,
    /// The group failed as a whole; `unknown` when it may have committed.
    Failed {
        unknown: bool,
    },
}

/// One row of `append_group`.
type GroupRow = (
    Option<Vec<i16>>,
    Option<Vec<Option<i64>>>,
    Option<Vec<Option<i64>>>,
    Option<Xid8>,
);

impl PgEventStore {
    /// Appends one stream's events through the group committer.
    pub(crate) async fn append_grouped(&self, append: StreamAppend) -> Result<Appended> {
        check_appends(std::slice::from_ref(&append))?;
        let expected = expected_code(append.expected)?;
        let mut schema_versions = Vec::with_capacity(append.events.len());
        let mut metadata = Vec::with_capacity(append.events.len());
        for event in &append.events {
            let (schema_version, meta) = event_columns(event)?;
            schema_versions.push(schema_version);
            metadata.push(meta.unwrap_or_default());
        }
        let append = Arc::new(append);
        let (reply, answer) = oneshot::channel();
        let request = Request {
            append: Arc::clone(&append),
            expected,
            schema_versions,
            metadata,
            reply,
        };
        let committer = self.inner.group.get_or_init(|| {
            GroupCommit::start(
                self.pool.clone(),
                self.inner.sql.append_group.clone(),
                self.inner.options.group_committers,
            )
        });
        let reply = match committer.queue.send(request) {
            // The committer ended (its runtime shut down): append on our own.
            Err(_) => Reply::Failed { unknown: false },
            Ok(()) => answer.await.unwrap_or(Reply::Failed { unknown: true }),
        };
        let appends = std::slice::from_ref(&*append);
        let mut on = On::Pool(&self.pool);
        match reply {
            Reply::Written {
                version,
                last_position,
                commit,
            } => Ok(Appended::wrote(AppendResult {
                position: Position::new(commit, last_position),
                streams: vec![StreamVersion {
                    stream_id: append.stream_id.clone(),
                    version,
                }],
            })),
            Reply::Conflict(actual) => Err(Error::Conflict {
                stream_id: append.stream_id.clone(),
                expected: append.expected,
                actual,
            }),
            Reply::Stored => self.repeated(&mut on, appends).await,
            Reply::Raced => self.raced(&on, appends).await,
            Reply::Stale | Reply::Failed { unknown: false } => {
                self.append_on_live_connection(appends).await
            }
            Reply::Failed { unknown: true } => self.append_after_unknown(appends).await,
        }
    }

    /// The group this append was in may have committed before its connection was lost:
    /// append again (idempotent) until the store answers, or say the outcome is unknown.
    /// Dead pooled connections are replaced at once (`on_live_connection`); a server that
    /// cannot be reached is waited for a little.
    async fn append_after_unknown(&self, appends: &[StreamAppend]) -> Result<Appended> {
        let mut pauses = UNKNOWN_RETRIES.iter();
        loop {
            match self.append_on_live_connection(appends).await {
                Err(error) if lost_connection(&error) || pool_timed_out(&error) => {
                    let Some(pause) = pauses.next() else {
                        return Err(Error::backend(OutcomeUnknown {
                            cause: Box::new(error),
                        }));
                    };
                    debug!(%error, "retrying an append whose group commit was lost");
                    tokio::time::sleep(*pause).await;
                }
                // The lost group may have written it: readers are woken either way.
                outcome => {
                    return outcome.map(|appended| Appended {
                        wrote: true,
                        ..appended
                    })
                }
            }
        }
    }
}

/// An append's group commit was lost with its connection, and the store could not be
/// reached to find out whether it committed. Appending the same events again (the same
/// event ids) is safe: it returns the original result if they were stored.
#[derive(Debug, thiserror::Error)]
#[error("the append's outcome is unknown (its commit was lost with the connection, and retrying failed: {cause}); append the same events again to find out: a stored append is answered with its original result")]
pub struct OutcomeUnknown {
    cause: annals_core::BoxError,
}

/// Whether a failed group may have committed: the connection broke under it (a FATAL may
/// come from a server going down around the commit), or it failed in a way that says
/// nothing either way; not a database error in the statement (its transaction rolled
/// back) nor a pool that never handed out a connection.
fn may_have_committed(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(_) => connection_broke(error),
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Configuration(_)
        | sqlx::Error::Encode(_)
        | sqlx::Error::TypeNotFound { .. } => false,
        _ => true,
    }
}

/// Whether the pool gave up waiting for a connection (the server is unreachable).
fn pool_timed_out(error: &Error) -> bool {
    matches!(error, Error::Backend(cause)
        if matches!(cause.downcast_ref::<sqlx::Error>(), Some(sqlx::Error::PoolTimedOut)))
}

/// A committer: takes what is queued, commits it as one group, answers, repeats. While
/// it commits, another committer may take the next group.
async fn commit_groups(
    pool: PgPool,
    sql: Arc<str>,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<Request>>>,
    sizes: metrics::Histogram,
) {
    let mut group = Vec::new();
    loop {
        // The callers just answered are woken on this runtime: let them run (and queue
        // their next appends) before taking the next group. Without this, the next group
        // held whichever caller happened to be first, alone, and the rest waited for the
        // one after: groups alternated 1 and 63 on 64 writers, half the throughput. A
        // yield, not a timer: when nothing else is runnable it returns at once.
        tokio::task::yield_now().await;
        let events = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut events = first.append.events.len();
            group.push(first);
            while group.len() < MAX_REQUESTS && events < MAX_EVENTS {
                let Ok(next) = queue.try_recv() else { break };
                events += next.append.events.len();
                group.push(next);
            }
            events
        };
        sizes.record(group.len() as f64);
        let span = tracing::debug_span!(
            "annals.group_commit",
            requests = group.len(),
            events,
            attempts = tracing::field::Empty,
        );
        let replies = commit(&pool, &sql, &group).instrument(span).await;
        for (request, reply) in group.drain(..).zip(replies) {
            // A caller that stopped waiting does not stop the others.
            let _ = request.reply.send(reply);
        }
    }
}

/// Commits one group: a reply per request.
async fn commit(pool: &PgPool, sql: &str, group: &[Request]) -> Vec<Reply> {
    let events: usize = group.iter().map(|r| r.append.events.len()).sum();
    let mut streams = Vec::with_capacity(group.len());
    let mut expected = Vec::with_capacity(group.len());
    let mut counts = Vec::with_capacity(group.len());
    let mut event_request = Vec::with_capacity(events);
    let mut ids = Vec::with_capacity(events);
    let mut types = Vec::with_capacity(events);
    let mut schema_versions = Vec::with_capacity(events);
    let mut metadata = Vec::with_capacity(events);
    let mut is_json = Vec::with_capacity(events);
    let mut payloads = Vec::with_capacity(events);
    for (index, request) in (1i32..).zip(group) {
        streams.push(request.append.stream_id.as_str());
        expected.push(request.expected);
        counts.push(i32::try_from(request.append.events.len()).unwrap_or(i32::MAX));
        for (i, event) in request.append.events.iter().enumerate() {
            event_request.push(index);
            ids.push(event.event_id);
            types.push(event.event_type.as_str());
            schema_versions.push(request.schema_versions[i]);
            metadata.push(request.metadata[i].as_str());
            is_json.push(event.encoding == annals_core::Encoding::Json);
            payloads.push(event.payload.as_slice());
        }
    }
    let mut attempts = 0;
    let failed = loop {
        attempts += 1;
        let row: sqlx::Result<GroupRow> = sqlx::query_as(sql)
            .bind(&streams)
            .bind(&expected)
            .bind(&counts)
            .bind(&event_request)
            .bind(&ids)
            .bind(&types)
            .bind(&schema_versions)
            .bind(&metadata)
            .bind(&is_json)
            .bind(&payloads)
            .fetch_one(pool)
            .await;
        match row {
            Ok(row) => {
                tracing::Span::current().record("attempts", attempts);
                return replies(group.len(), row);
            }
            Err(e)
                if attempts <= RACED_RETRIES
                    && e.as_database_error().and_then(|d| d.code()).as_deref() == Some("AN413") =>
            {
                debug!("a single-statement append wrote a stream of the group; running it again");
            }
            Err(e) => break e,
        }
    };
    tracing::Span::current().record("attempts", attempts);
    let unknown = may_have_committed(&failed);
    if unknown {
        warn!(error = %from_sqlx(failed), requests = group.len(), "group commit lost; its appends are retried one by one");
    } else {
        debug!(error = %failed, requests = group.len(), "group commit failed; its appends run one by one");
    }
    vec![Reply::Failed { unknown }; group.len()]
}

/// The replies `append_group`'s row gives, or every request failed when it is malformed.
fn replies(n: usize, (outcomes, versions, positions, commit): GroupRow) -> Vec<Reply> {
    let outcomes = outcomes.unwrap_or_default();
    let versions = versions.unwrap_or_default();
    let positions = positions.unwrap_or_default();
    let to_u64 = |v: Option<&Option<i64>>| v.copied().flatten().and_then(|v| u64::try_from(v).ok());
    let replies: Option<Vec<Reply>> = (0..n)
        .map(|i| {
            Some(match outcomes.get(i)? {
                0 => Reply::Written {
                    version: to_u64(versions.get(i))?,
                    last_position: to_u64(positions.get(i))?,
                    commit: commit.as_ref()?.0,
                },
                1 => Reply::Conflict(to_u64(versions.get(i))?),
                2 => Reply::Stored,
                3 => Reply::Raced,
                4 => Reply::Stale,
                _ => return None,
            })
        })
        .collect();
    replies.unwrap_or_else(|| {
        warn!("append_group returned a malformed row; its appends run one by one");
        // Nothing is known of what it did: the ordinary path finds out, idempotently.
        vec![Reply::Failed { unknown: true }; n]
    })
}
