use std::fmt;

use serde::{Deserialize, Serialize};

/// A point in the global log, totally ordered in the order readers see events.
///
/// `commit` orders atomic appends (in Postgres: the appending transaction's id, which makes
/// the log safe to tail; see `annals-store-postgres`), `sequence` is the event's unique
/// global number. A checkpoint is a `Position`: reading `after` it never skips an event
/// that commits later.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Position {
    commit: u64,
    sequence: u64,
}

impl Position {
    /// Before the first event.
    pub const START: Position = Position {
        commit: 0,
        sequence: 0,
    };

    /// Builds a position from its parts (stores and checkpoint tables use this).
    pub const fn new(commit: u64, sequence: u64) -> Self {
        Self { commit, sequence }
    }

    /// The commit-order component.
    pub const fn commit(self) -> u64 {
        self.commit
    }

    /// The event's unique global sequence number.
    pub const fn sequence(self) -> u64 {
        self.sequence
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.commit, self.sequence)
    }
}
