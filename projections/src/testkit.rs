//! Given/when/then for projections (feature `testkit`): given these events, the in-memory
//! read model holds these rows.

use std::time::Duration;

use annals_core::{encode_event, Encoding, EventStore, ExpectedVersion};
use annals_store_memory::MemoryEventStore;

use crate::{MemoryCheckpoints, Projection, ProjectionEngine, Result};

/// Appends `events` (each to its stream) to a fresh in-memory store, runs `projection`
/// until it has caught up, and returns the read model for assertions.
///
/// # Errors
///
/// When an event does not encode, or the projection halts or does not catch up within
/// ten seconds.
///
/// See `examples/bank/src/balances/tests.rs` for a projection tested this way: given an
/// account's events, `account_balances` holds one row per account.
pub async fn given<P, I, St>(projection: P, events: I) -> Result<MemoryCheckpoints>
where
    P: Projection<MemoryCheckpoints>,
    I: IntoIterator<Item = (St, P::Event)>,
    St: AsRef<str>,
{
    let store = MemoryEventStore::new();
    let mut head = annals_core::Position::START;
    for (stream, event) in events {
        let event = encode_event(&event, Encoding::Json)?;
        head = store
            .append_to_stream(stream.as_ref(), ExpectedVersion::Any, vec![event])
            .await?
            .position;
    }
    let read = MemoryCheckpoints::new();
    let running = ProjectionEngine::new(store, read.clone())
        .register(projection)
        .start();
    let caught_up = running
        .wait_until_caught_up(head, Duration::from_secs(10))
        .await;
    running.shutdown().await;
    caught_up.map(|()| read)
}
