//! Rebuilds into shadow tables: replay the log beside the live read model, then swap.
//!
//! An event the handler refuses is treated as the live worker would treat it, per the
//! projection's failure policy (or dead-lettered when the operator asks to skip failures):
//! `Halt` stops the rebuild (it resumes where it stopped), `DeadLetter` and `Park` record it
//! as a letter of the rebuild, which replaces the projection's letters at the swap.

use std::collections::HashSet;

use annals_core::{EventStore, Position, ReadAll, RecordedEvent};
use tracing::{info, warn};

use crate::{
    projection::ProjectionKind,
    subscription::{Failure, Subscriber},
    CheckpointStore, DeadLetter, Error, FailurePolicy, Projection, Result,
};

/// The name a rebuild of `projection` keeps its checkpoint and dead letters under until the
/// swap.
pub(crate) fn shadow_name(projection: &str) -> String {
    format!("{projection}@rebuild")
}

/// How a rebuild treats events its handler refuses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RebuildOptions {
    /// Dead-letter refused events even when the projection's policy is `Halt` (where the
    /// rebuild would stop on them), so the rebuilt model can be swapped in and the events
    /// retried or discarded later. With `Park`, the later events of their streams are
    /// parked behind them either way.
    pub skip_failures: bool,
    /// Stop at this log position (see `EventStore::position_at` for a time) and keep the
    /// shadow for inspection instead of swapping it in; a later rebuild without it
    /// resumes from there and swaps.
    pub until: Option<Position>,
}

impl RebuildOptions {
    /// Stop at `position` without swapping (see [`until`](RebuildOptions::until)).
    #[must_use]
    pub fn until(mut self, position: Position) -> Self {
        self.until = Some(position);
        self
    }

    /// Dead-letter refused events instead of stopping (see
    /// [`skip_failures`](RebuildOptions::skip_failures)).
    #[must_use]
    pub fn skip_failures(mut self, on: bool) -> Self {
        self.skip_failures = on;
        self
    }
}

/// Where a rebuild stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebuildProgress {
    /// The projection being rebuilt.
    pub projection: String,
    /// Global sequence number reached.
    pub done: u64,
    /// The log's head (moves while writers append).
    pub total: u64,
    /// Where an interrupted rebuild resumed from.
    pub resumed_from: Option<Position>,
    /// Set on the last report: the shadow tables were swapped in.
    pub swapped: bool,
}

fn handler_error(projection: &str, position: Position, error: impl ToString) -> Error {
    Error::RebuildFailed {
        projection: projection.to_owned(),
        position,
        error: error.to_string(),
    }
}

/// Where a page leaves the checkpoint: its last event, or the head when the page is short.
fn reached(at: Position, head: Position, events: &[RecordedEvent], full: bool) -> Position {
    let last = events.last().map_or(at, |e| e.position);
    if full {
        last
    } else {
        last.max(head)
    }
}

/// One rebuild's state.
struct Rebuild<'a, P, S, C> {
    kind: &'a ProjectionKind<P>,
    store: &'a S,
    checkpoints: &'a C,
    name: &'a str,
    /// The rebuild's checkpoint and letters live under this name until the swap.
    shadow: String,
    types: Vec<String>,
    tables: Vec<String>,
    batch: usize,
    policy: FailurePolicy,
    /// Streams parked behind a letter of this rebuild.
    parked: HashSet<String>,
    /// Where to stop without swapping.
    until: Option<Position>,
}

impl<P, S, C> Rebuild<'_, P, S, C>
where
    P: Projection<C>,
    S: EventStore,
    C: CheckpointStore,
{
    /// The page after `after`, with the head read before it (a short page covers every
    /// event of ours up to that head) and whether the page is full.
    async fn page(&self, after: Position) -> Result<(Position, Vec<RecordedEvent>, bool)> {
        let mut head = self.store.head().await?;
        let read = ReadAll::after(after)
            .limit(self.batch)
            .event_types(self.types.iter().cloned());
        let mut events = self.store.read_all(read).await?;
        let mut full = events.len() == self.batch;
        if let Some(until) = self.until {
            // Nothing past `until`: a page that reaches it is the last.
            head = head.min(until);
            if events.last().is_some_and(|e| e.position > until) {
                events.retain(|e| e.position <= until);
                full = false;
            }
        }
        Ok((head, events, full))
    }

    fn touches_parked(&self, events: &[RecordedEvent]) -> bool {
        !self.parked.is_empty() && events.iter().any(|e| self.parked.contains(&e.stream_id))
    }

    /// Applies a page in one shadow transaction, moving the rebuild's checkpoint from `at`
    /// to `to`; on a failure, one event at a time.
    async fn apply_page(
        &mut self,
        events: &[RecordedEvent],
        at: Position,
        to: Position,
    ) -> Result<()> {
        if !self.touches_parked(events) {
            let mut tx = self
                .checkpoints
                .begin_shadow(self.name, &self.tables, at)
                .await?;
            match Subscriber::<C>::apply(self.kind, events, &mut tx).await {
                Ok(()) => return self.checkpoints.commit_shadow(tx, self.name, to).await,
                Err(failure @ Failure::Unavailable(_)) => {
                    let first = events.first().map_or(at, |e| e.position);
                    return Err(handler_error(self.name, first, failure));
                }
                Err(_) => drop(tx),
            }
        }
        let mut from = at;
        let last = events.len().saturating_sub(1);
        for (i, event) in events.iter().enumerate() {
            let target = if i == last { to } else { event.position };
            self.apply_one(event, from, target).await?;
            from = target;
        }
        Ok(())
    }

    /// One event, with the projection's retries, then its failure policy.
    async fn apply_one(
        &mut self,
        event: &RecordedEvent,
        from: Position,
        to: Position,
    ) -> Result<()> {
        let one = std::slice::from_ref(event);
        let (error, attempts, parks) = if self.parked.contains(&event.stream_id) {
            let error = format!(
                "parked behind an earlier dead letter of stream {}",
                event.stream_id
            );
            (error, 0, true)
        } else {
            let retry = Subscriber::<C>::retry(self.kind);
            let mut attempts = 0;
            let error = loop {
                attempts += 1;
                let mut tx = self
                    .checkpoints
                    .begin_shadow(self.name, &self.tables, from)
                    .await?;
                let failure = match Subscriber::<C>::apply(self.kind, one, &mut tx).await {
                    Ok(()) => return self.checkpoints.commit_shadow(tx, self.name, to).await,
                    Err(failure) => failure,
                };
                drop(tx);
                match failure {
                    Failure::Unavailable(e) => {
                        return Err(handler_error(self.name, event.position, e))
                    }
                    Failure::Poison(e) => break e.to_string(),
                    Failure::Retry(e) if attempts >= retry.attempts.max(1) => break e.to_string(),
                    Failure::Retry(_) => {
                        tokio::time::sleep(retry.delay_with_jitter(attempts)).await
                    }
                }
            };
            if self.policy == FailurePolicy::Halt {
                return Err(handler_error(self.name, event.position, error));
            }
            (error, attempts, self.policy == FailurePolicy::Park)
        };
        let mut letter = DeadLetter::new(&self.shadow, event, error, attempts).parking(parks);
        let mut tx = self
            .checkpoints
            .begin_shadow(self.name, &self.tables, from)
            .await?;
        letter.id = self
            .checkpoints
            .record_dead_letter(&mut tx, &letter)
            .await?;
        self.checkpoints.commit_shadow(tx, self.name, to).await?;
        if parks {
            self.parked.insert(event.stream_id.clone());
        }
        warn!(%letter, "rebuild dead-lettered an event");
        Ok(())
    }

    /// Catches up in the shadow tables, a transaction per page, until a short page.
    async fn catch_up(
        &mut self,
        mut at: Position,
        report: &mut impl FnMut(Position, Position, bool),
    ) -> Result<Position> {
        loop {
            let (head, events, full) = self.page(at).await?;
            let to = reached(at, head, &events, full);
            if to > at {
                self.apply_page(&events, at, to).await?;
                at = to;
            }
            report(at, head, false);
            if !full {
                return Ok(at);
            }
        }
    }

    /// Holding the live checkpoint's lock (live batches wait), applies what arrived since
    /// `at` and replaces the live tables, in one transaction. `Ok(None)` when an event there
    /// failed or belongs to a parked stream: it must go through `catch_up` first.
    async fn swap(&self, mut at: Position) -> Result<Option<Position>> {
        let mut tx = self
            .checkpoints
            .begin_swap(self.name, &self.tables, at)
            .await?;
        loop {
            let (head, events, full) = self.page(at).await?;
            if !events.is_empty() {
                if self.touches_parked(&events) {
                    return Ok(None);
                }
                if Subscriber::<C>::apply(self.kind, &events, &mut tx)
                    .await
                    .is_err()
                {
                    return Ok(None);
                }
            }
            at = reached(at, head, &events, full);
            if !full {
                break;
            }
        }
        self.checkpoints
            .commit_swap(tx, self.name, &self.tables, at)
            .await?;
        Ok(Some(at))
    }
}

pub(crate) async fn rebuild<P, S, C>(
    kind: &ProjectionKind<P>,
    store: &S,
    checkpoints: &C,
    batch: usize,
    options: &RebuildOptions,
    progress: &mut (dyn FnMut(&RebuildProgress) + Send),
) -> Result<Position>
where
    P: Projection<C>,
    S: EventStore,
    C: CheckpointStore,
{
    let projection = &*kind.projection;
    let name = projection.name();
    let types = projection.event_types();
    if types.is_empty() {
        return Err(Error::Unsupported(
            "the projection reads no event types (override Projection::event_types)",
        ));
    }
    let tables = projection.tables();
    if tables.is_empty() {
        return Err(Error::Unsupported(
            "the projection declares no tables (Projection::tables)",
        ));
    }
    let policy = match projection.on_failure() {
        FailurePolicy::Halt if options.skip_failures => FailurePolicy::DeadLetter,
        policy => policy,
    };
    let rebuild = Rebuild {
        kind,
        store,
        checkpoints,
        name,
        shadow: shadow_name(name),
        types,
        tables,
        batch: batch.max(1),
        policy,
        parked: HashSet::new(),
        until: options.until,
    };
    // One rebuild per projection at a time; status reads "rebuilding" while it holds this.
    let Some(lease) = checkpoints.try_lease(&rebuild.shadow).await? else {
        return Err(Error::Unsupported(
            "a rebuild of this projection is running elsewhere",
        ));
    };
    let rebuilt = rebuild_leased(rebuild, progress).await;
    checkpoints.release(lease).await;
    rebuilt
}

async fn rebuild_leased<P, S, C>(
    mut rebuild: Rebuild<'_, P, S, C>,
    progress: &mut (dyn FnMut(&RebuildProgress) + Send),
) -> Result<Position>
where
    P: Projection<C>,
    S: EventStore,
    C: CheckpointStore,
{
    let (name, checkpoints) = (rebuild.name, rebuild.checkpoints);
    let (mut tx, mut at) = checkpoints.open_shadow(name).await?;
    rebuild
        .kind
        .projection
        .setup(&mut tx)
        .await
        .map_err(|e| handler_error(name, at, e))?;
    checkpoints.commit_untracked(tx).await?;
    // A resumed rebuild keeps parking the streams its letters parked.
    rebuild.parked = checkpoints
        .dead_letters(Some(&rebuild.shadow))
        .await?
        .into_iter()
        .filter(|d| d.parks_stream)
        .map(|d| d.stream_id)
        .collect();
    let resumed_from = (at > Position::START).then_some(at);
    info!(projection = name, resumed_from = ?resumed_from, "rebuilding into shadow tables");
    let mut report = |at: Position, head: Position, swapped: bool| {
        progress(&RebuildProgress {
            projection: name.to_owned(),
            done: at.sequence(),
            total: head.sequence().max(at.sequence()),
            resumed_from,
            swapped,
        });
    };
    if let Some(until) = rebuild.until {
        if at > until {
            return Err(Error::Unsupported(
                "the unfinished rebuild is already past that point: discard it first",
            ));
        }
        at = rebuild.catch_up(at, &mut report).await?;
        info!(projection = name, checkpoint = %at, "rebuilt up to the point asked for; not swapped");
        return Ok(at);
    }
    loop {
        at = rebuild.catch_up(at, &mut report).await?;
        if let Some(swapped) = rebuild.swap(at).await? {
            at = swapped;
            break;
        }
    }
    let head = rebuild.store.head().await?;
    report(at, head, true);
    info!(projection = name, checkpoint = %at, "rebuild swapped in");
    Ok(at)
}
