//! Answering a repeated append with its original result (idempotent appends), and telling
//! a repeat from a misuse of stored event ids.

use std::collections::HashMap;

use annals_core::{
    check_repeat, AppendResult, Error, Position, Repeat, Result, StoredAt, StreamAppend,
    StreamVersion,
};
use uuid::Uuid;

use super::{Appended, On};
use crate::{error::from_sqlx, read::Xid8, PgEventStore};

/// One row of `stored_events.sql`.
type StoredRow = (Uuid, String, i64, i64, Xid8, Option<Xid8>, Option<Xid8>);

impl PgEventStore {
    /// The append's first event is stored: answer with the original result if it is the same
    /// append, refuse it otherwise. Runs on `on`, so a caller's transaction sees its own
    /// earlier appends.
    pub(super) async fn repeated(
        &self,
        on: &mut On<'_>,
        appends: &[StreamAppend],
    ) -> Result<Appended> {
        let ids: Vec<Uuid> = appends
            .iter()
            .flat_map(|a| a.events.iter().map(|e| e.event_id))
            .collect();
        let rows: Vec<StoredRow> = on
            .fetch_all(sqlx::query_as(&self.inner.sql.stored_events).bind(&ids))
            .await
            .map_err(from_sqlx)?;
        let stored: HashMap<Uuid, StoredAt> = rows
            .into_iter()
            .map(
                |(id, stream_id, version, position, commit, previous, next)| {
                    let at = StoredAt {
                        stream_id,
                        stream_version: u64::try_from(version).unwrap_or_default(),
                        position: Position::new(
                            commit.0,
                            u64::try_from(position).unwrap_or_default(),
                        ),
                        previous_commit: previous.map(|x| x.0),
                        next_commit: next.map(|x| x.0),
                    };
                    (id, at)
                },
            )
            .collect();
        let Repeat::Same { position, versions } = check_repeat(appends, &stored)? else {
            return Err(Error::backend(
                "an append's event id was reported stored, then not found",
            ));
        };
        let mut streams = Vec::with_capacity(appends.len());
        for (append, version) in appends.iter().zip(versions) {
            let version = match version {
                Some(version) => version,
                // A stream the append only checked: its version as of that commit.
                None => {
                    let (version,): (i64,) = on
                        .fetch_one(
                            sqlx::query_as(&self.inner.sql.version_as_of)
                                .bind(&append.stream_id)
                                .bind(position.commit().to_string()),
                        )
                        .await
                        .map_err(from_sqlx)?;
                    u64::try_from(version).unwrap_or_default()
                }
            };
            streams.push(StreamVersion {
                stream_id: append.stream_id.clone(),
                version,
            });
        }
        Ok(Appended {
            result: AppendResult { position, streams },
            wrote: false,
        })
    }

    /// An append failed on the unique index of event ids: one of its later events is stored,
    /// or an identical append committed while this one waited. On the pool the statement
    /// rolled back whole, so the answer is what `repeated` finds; in a caller's transaction
    /// the transaction is aborted, so the append is refused either way.
    pub(super) async fn raced(&self, on: &On<'_>, appends: &[StreamAppend]) -> Result<Appended> {
        let first = appends
            .iter()
            .flat_map(|a| a.events.first())
            .map(|e| e.event_id)
            .next()
            .unwrap_or_else(Uuid::nil);
        if on.in_caller_transaction() {
            return Err(Error::DuplicateEvent {
                event_id: first,
                detail: "by another append (this transaction is aborted: roll it back)".to_owned(),
            });
        }
        let pool = self.pool.clone();
        self.repeated(&mut On::Pool(&pool), appends)
            .await
            .map_err(|e| match e {
                // Not even the first is stored: another event of the append is.
                Error::Backend(_) => Error::DuplicateEvent {
                    event_id: first,
                    detail: "as one of this append's later events".to_owned(),
                },
                other => other,
            })
    }
}
