use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use annals_core::{
    AppendResult, EventStore, Position, ReadAll, ReadStream, RecordedEvent, Result, StreamAppend,
};
use chrono::{DateTime, Utc};

use crate::{listen::nap, PgEventStore};

/// Counts an append in flight while it lives.
struct Appending<'a> {
    counter: &'a AtomicUsize,
    /// How many were in flight when this one entered, itself included.
    count: usize,
}

impl<'a> Appending<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        let count = counter.fetch_add(1, Ordering::Relaxed) + 1;
        Self { counter, count }
    }
}

impl Drop for Appending<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The first re-check after a wake-up that found the new events held back.
const HELD_BACK_RECHECK: Duration = Duration::from_millis(5);

impl EventStore for PgEventStore {
    #[tracing::instrument(
        name = "annals.append",
        skip_all,
        fields(store = "postgres", streams = appends.len(), events = appends.iter().map(|a| a.events.len()).sum::<usize>())
    )]
    async fn append(&self, appends: Vec<StreamAppend>) -> Result<AppendResult> {
        let started = Instant::now();
        // One stream's events may share a commit with other callers' when enough appends
        // are in flight; several streams, or none, take the ordinary path.
        let appending = Appending::enter(&self.inner.appending);
        let group =
            self.inner.options.group_commit && appending.count > self.inner.options.group_above;
        let appended = match <[StreamAppend; 1]>::try_from(appends) {
            Ok([append]) if group && !append.events.is_empty() => self.append_grouped(append).await,
            // Idempotent by event ids: after a lost connection, the retry returns the
            // original result if the lost attempt committed.
            Ok(one) => self.append_on_live_connection(&one).await,
            Err(appends) => self.append_on_live_connection(&appends).await,
        };
        metrics::histogram!("annals_append_duration_seconds", "store" => "postgres")
            .record(started.elapsed().as_secs_f64());
        let appended = appended?;
        if appended.wrote {
            self.inner.wakeups.appended(self.inner.options.notify);
        }
        Ok(appended.result)
    }

    async fn read_stream(&self, stream_id: &str, read: ReadStream) -> Result<Vec<RecordedEvent>> {
        self.on_live_connection(|| self.read_stream_rows(stream_id, read))
            .await
    }

    #[tracing::instrument(name = "annals.read_all", skip_all, fields(store = "postgres", after = %read.after, limit = read.limit))]
    async fn read_all(&self, read: ReadAll) -> Result<Vec<RecordedEvent>> {
        self.on_live_connection(|| self.read_all_rows(read.clone()))
            .await
    }

    async fn head(&self) -> Result<Position> {
        self.on_live_connection(|| self.head_position()).await
    }

    async fn event_by_id(
        &self,
        stream_id: &str,
        event_id: uuid::Uuid,
    ) -> Result<Option<RecordedEvent>> {
        self.on_live_connection(|| self.event_row(stream_id, event_id))
            .await
    }

    async fn held_back(&self) -> Result<u64> {
        self.on_live_connection(|| self.held_back_count()).await
    }

    async fn position_at(&self, at: DateTime<Utc>) -> Result<Position> {
        self.on_live_connection(|| self.position_at_time(at)).await
    }

    async fn recorded_at(&self, position: Position) -> Result<Option<DateTime<Utc>>> {
        if position == Position::START {
            return Ok(None);
        }
        self.on_live_connection(|| async {
            sqlx::query_scalar(&self.inner.sql.recorded_at)
                .bind(i64::try_from(position.sequence()).unwrap_or(i64::MAX))
                .fetch_optional(&self.pool)
                .await
                .map_err(crate::error::from_sqlx)
        })
        .await
    }

    async fn stream_version(&self, stream_id: &str) -> Result<u64> {
        self.on_live_connection(|| self.version_of(stream_id)).await
    }

    async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        // Subscribe before the first check, so a notification in between is not missed.
        let mut wakeups = self.inner.wakeups.subscribe();
        // After a wake-up that shows nothing new, the events are there but held back (an
        // older transaction anywhere on the cluster is still open): look again soon, more
        // slowly each time, rather than only at the next poll.
        let mut recheck: Option<Duration> = None;
        let poll = self.inner.options.poll_interval;
        loop {
            if self.head_position().await? > after {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let pause = recheck.map_or(poll, |r| r.min(poll)).min(left);
            recheck = if nap(&mut wakeups, pause).await {
                Some(HELD_BACK_RECHECK)
            } else {
                recheck.map(|r| r * 2)
            };
        }
    }
}
