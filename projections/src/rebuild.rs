//! Rebuilds into shadow tables: replay the log beside the live read model, then swap.

use annals_core::{decode_event, Envelope, EventStore, Position, ReadAll, Upcasters};
use tracing::info;

use crate::{projection::ProjectionKind, Checkpoints, Error, Projection, Rebuilds, Result};

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

/// Reads a projection's events page by page, decoded.
struct Pages<'a, S> {
    store: &'a S,
    upcasters: &'a Upcasters,
    /// The projection's event types, computed once.
    types: Vec<String>,
    batch: usize,
    name: &'a str,
}

impl<S: EventStore> Pages<'_, S> {
    /// The page after `after`, with the head read before it (a short page covers everything
    /// of ours up to that head) and whether the page is full.
    async fn after<E: annals_core::DomainEvent>(
        &self,
        after: Position,
    ) -> Result<(Position, Vec<Envelope<E>>, bool)> {
        let head = self.store.head().await?;
        let read = ReadAll::after(after)
            .limit(self.batch)
            .event_types(self.types.iter().cloned());
        let events = self.store.read_all(read).await?;
        let full = events.len() == self.batch;
        let decoded = events
            .iter()
            .map(|e| {
                decode_event(e, self.upcasters)
                    .map_err(|err| handler_error(self.name, e.position, err))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((head, decoded, full))
    }
}

/// Where a page leaves the checkpoint: its last event, or the head when the page is short.
fn reached<E>(at: Position, head: Position, events: &[Envelope<E>], full: bool) -> Position {
    let last = events.last().map_or(at, |e| e.position);
    if full {
        last
    } else {
        last.max(head)
    }
}

pub(crate) async fn rebuild<P, S, C>(
    kind: &ProjectionKind<P>,
    store: &S,
    checkpoints: &C,
    batch: usize,
    progress: &mut (dyn FnMut(&RebuildProgress) + Send),
) -> Result<Position>
where
    P: Projection<C>,
    S: EventStore,
    C: Checkpoints + Rebuilds,
{
    let projection = &*kind.projection;
    let upcasters: &Upcasters = &kind.upcasters;
    let name = projection.name();
    let pages = Pages {
        store,
        upcasters,
        types: projection.event_types(),
        batch: batch.max(1),
        name,
    };
    if pages.types.is_empty() {
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
    let (mut tx, mut at) = checkpoints.open_shadow(name).await?;
    projection
        .setup(&mut tx)
        .await
        .map_err(|e| handler_error(name, at, e))?;
    checkpoints.commit_untracked(tx).await?;
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

    // Catch up in the shadow tables, a transaction per batch, until a short page.
    loop {
        let (head, events, full) = pages.after::<P::Event>(at).await?;
        let to = reached(at, head, &events, full);
        if to > at {
            let mut tx = checkpoints.begin_shadow(name, &tables, at).await?;
            projection
                .handle_batch(&events, &mut tx)
                .await
                .map_err(|e| handler_error(name, events.first().map_or(at, |e| e.position), e))?;
            checkpoints.commit_shadow(tx, name, to).await?;
            at = to;
        }
        report(at, head, false);
        if !full {
            break;
        }
    }

    // Swap: holding the live checkpoint's lock (live batches wait), apply what arrived
    // since, then replace the live tables in the same transaction.
    let mut tx = checkpoints.begin_swap(name, &tables, at).await?;
    loop {
        let (head, events, full) = pages.after::<P::Event>(at).await?;
        if !events.is_empty() {
            projection
                .handle_batch(&events, &mut tx)
                .await
                .map_err(|e| handler_error(name, events[0].position, e))?;
        }
        at = reached(at, head, &events, full);
        if !full {
            break;
        }
    }
    checkpoints.commit_swap(tx, name, &tables, at).await?;
    let head = store.head().await?;
    report(at, head, true);
    info!(projection = name, checkpoint = %at, "rebuild swapped in");
    Ok(at)
}
