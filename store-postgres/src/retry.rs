//! Running idempotent store operations again on a live connection.
//!
//! A pool built by [`PgEventStore::connect`] does not ping a connection before handing it
//! out (sqlx's `test_before_acquire`): measured, the ping was a round trip on every
//! statement, 12-30 % of a one-event append. A connection that died while idle (a server
//! restart, an idle timeout, a failover) then fails the first statement sent on it. Every
//! operation of the store's own API that runs on the pool is idempotent (appends by their
//! event ids, everything else reads, or writes only what is newer), so it is simply run
//! again: the pool drops the dead connection, and the next attempt gets another one.

use std::future::Future;

use annals_core::{Result, StreamAppend};
use tracing::debug;

use crate::{
    append::{Appended, On},
    error::lost_connection,
    PgEventStore,
};

impl PgEventStore {
    /// Runs `op`, and again while it fails on a lost connection, at most once per
    /// connection the pool may hold, plus one (every idle connection may have died at
    /// once). Only for operations that are safe to repeat after an unknown outcome.
    pub(crate) async fn on_live_connection<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut left = self.pool.options().get_max_connections();
        loop {
            match op().await {
                Err(error) if left > 0 && lost_connection(&error) => {
                    left -= 1;
                    debug!(%error, "connection lost; running the operation again on another");
                }
                outcome => return outcome,
            }
        }
    }

    /// Appends on the pool, again on another connection while one turns out lost. An
    /// earlier attempt may have committed before its connection went (the retry then
    /// finds the events stored and returns their original result): such an append counts
    /// as written, so readers are woken for it.
    pub(crate) async fn append_on_live_connection(
        &self,
        appends: &[StreamAppend],
    ) -> Result<Appended> {
        let mut attempts = 0u32;
        let appended = self
            .on_live_connection(|| {
                attempts += 1;
                self.append_on(On::Pool(&self.pool), appends)
            })
            .await?;
        Ok(Appended {
            wrote: appended.wrote || attempts > 1,
            ..appended
        })
    }
}
