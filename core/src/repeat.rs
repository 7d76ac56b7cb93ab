//! Recognising a repeated append: the shared rule behind idempotent appends, for store
//! implementations.

use std::collections::HashMap;

use uuid::Uuid;

use crate::{Error, Position, StreamAppend};

/// Where an event id is stored: what a store looks up to tell a repeated append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAt {
    /// The stream holding it.
    pub stream_id: String,
    /// Its version there.
    pub stream_version: u64,
    /// Its position in the global log.
    pub position: Position,
    /// The commit (`Position::commit`) of the stream's event just before it, if any.
    /// `None` also when that event is in the same commit but was written by another append
    /// (a store that groups appends into one commit, and can tell them apart).
    pub previous_commit: Option<u64>,
    /// The commit of the stream's event just after it, if any (`None` as above).
    pub next_commit: Option<u64>,
}

/// How an append stands against the events already stored with its event ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Repeat {
    /// None of its events is stored: append it.
    New,
    /// All of them are stored, by one earlier append, on the same streams in the same
    /// order: answer with that append's result. `versions[i]` is stream `i`'s version
    /// after it, `None` for a stream the append only checked (the store computes those
    /// as of `position`).
    Same {
        /// The position of the append's last event.
        position: Position,
        /// Each stream's version after the append, where its events tell.
        versions: Vec<Option<u64>>,
    },
}

/// Decides whether `appends` repeats an earlier append, given where its event ids are
/// stored (`stored`, keyed by event id; ids not stored are absent).
///
/// The rule every annals store follows: an append is a repeat when every one of its events
/// is stored, in the stream it names, at consecutive versions in the order given, all by
/// one commit (one earlier append, or one transaction), with positions ascending in the
/// order given, and that commit wrote no other events to those streams (so a part of an
/// earlier append is not taken for all of it).
///
/// # Errors
///
/// [`Error::DuplicateEvent`] when some but not all events are stored, or they are stored
/// elsewhere or in another order.
///
/// ```
/// use std::collections::HashMap;
/// use annals_core::{check_repeat, Encoding, ExpectedVersion, NewEvent, Position, Repeat, StoredAt, StreamAppend};
///
/// let event = NewEvent::new("opened", 1, Encoding::Json, b"{}".to_vec());
/// let append = [StreamAppend::new("a", ExpectedVersion::NoStream, vec![event.clone()])];
/// assert_eq!(check_repeat(&append, &HashMap::new())?, Repeat::New);
///
/// let at = StoredAt {
///     stream_id: "a".into(),
///     stream_version: 1,
///     position: Position::new(7, 1),
///     previous_commit: None,
///     next_commit: Some(9),
/// };
/// let stored = HashMap::from([(event.event_id, at)]);
/// assert_eq!(
///     check_repeat(&append, &stored)?,
///     Repeat::Same { position: Position::new(7, 1), versions: vec![Some(1)] }
/// );
/// # Ok::<(), annals_core::Error>(())
/// ```
pub fn check_repeat(
    appends: &[StreamAppend],
    stored: &HashMap<Uuid, StoredAt>,
) -> Result<Repeat, Error> {
    let total: usize = appends.iter().map(|a| a.events.len()).sum();
    let found = appends
        .iter()
        .flat_map(|a| &a.events)
        .filter(|e| stored.contains_key(&e.event_id))
        .count();
    if found == 0 {
        return Ok(Repeat::New);
    }
    let duplicate = |event_id: Uuid, detail: String| Error::DuplicateEvent { event_id, detail };
    if found < total {
        let first = appends
            .iter()
            .flat_map(|a| &a.events)
            .find(|e| stored.contains_key(&e.event_id))
            .map_or_else(Uuid::nil, |e| e.event_id);
        return Err(duplicate(
            first,
            format!("but only {found} of the append's {total} events are"),
        ));
    }
    let mut commit = None;
    let mut last: Option<Position> = None;
    let mut versions = Vec::with_capacity(appends.len());
    for append in appends {
        let mut previous: Option<u64> = None;
        for event in &append.events {
            let Some(at) = stored.get(&event.event_id) else {
                continue;
            };
            if at.stream_id != append.stream_id {
                return Err(duplicate(
                    event.event_id,
                    format!(
                        "in stream `{}` at version {}, not in stream `{}`",
                        at.stream_id, at.stream_version, append.stream_id
                    ),
                ));
            }
            let in_order = previous.is_none_or(|p| at.stream_version == p + 1)
                && last.is_none_or(|l| at.position > l);
            if !in_order {
                return Err(duplicate(
                    event.event_id,
                    format!(
                        "at version {} of `{}`, in another order than this append's",
                        at.stream_version, at.stream_id
                    ),
                ));
            }
            if *commit.get_or_insert(at.position.commit()) != at.position.commit() {
                return Err(duplicate(
                    event.event_id,
                    "by another append than the rest of this append's events".to_owned(),
                ));
            }
            let opens = previous.is_none();
            // Inside the append, a neighbour written by another append of the same commit
            // (a group commit) means two appends' events are being taken for one.
            if !opens && at.previous_commit != commit {
                return Err(duplicate(
                    event.event_id,
                    "by two appends, not one".to_owned(),
                ));
            }
            let closes = append.events.last().map(|e| e.event_id) == Some(event.event_id);
            let wider =
                (opens && at.previous_commit == commit) || (closes && at.next_commit == commit);
            if wider {
                return Err(duplicate(
                    event.event_id,
                    format!(
                        "by an append that wrote more events to `{}` than this one",
                        at.stream_id
                    ),
                ));
            }
            previous = Some(at.stream_version);
            last = Some(at.position);
        }
        versions.push(previous);
    }
    Ok(Repeat::Same {
        position: last.unwrap_or_default(),
        versions,
    })
}
