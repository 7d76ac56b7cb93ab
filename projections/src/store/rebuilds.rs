use std::future::Future;

use annals_core::Position;

use crate::{Checkpoints, Error, Result};

/// What the shadow-rebuild hooks answer on a backend without them.
fn no_shadows<T>() -> Result<T> {
    Err(Error::Unsupported(
        "shadow rebuilds need the Postgres read-model store",
    ))
}

/// Resets and shadow rebuilds of a read model's tables. A backend without shadow schemas
/// implements [`reset`](Rebuilds::reset) only; the shadow hooks then answer
/// [`Error::Unsupported`].
pub trait Rebuilds: Checkpoints {
    /// Empties `tables` and moves `name`'s checkpoint back to the start (clearing its halt
    /// and dead letters), in one transaction. Its workers then replay the log.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn reset(&self, name: &str, tables: &[String]) -> impl Future<Output = Result<()>> + Send;

    /// Where an unfinished rebuild of `name` stands, if one exists.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn rebuild_checkpoint(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Position>>> + Send {
        let _ = name;
        async { Ok(None) }
    }

    /// Starts or resumes a rebuild: creates the shadow area if missing and returns a
    /// transaction writing there (for the projection's `setup`) with the position to
    /// resume from.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] where shadow rebuilds are not available; backend errors.
    fn open_shadow(&self, name: &str) -> impl Future<Output = Result<(Self::Tx, Position)>> + Send {
        let _ = name;
        async { no_shadows() }
    }

    /// A batch transaction writing to the shadow tables, fenced on the rebuild's
    /// checkpoint.
    ///
    /// # Errors
    ///
    /// As [`Checkpoints::begin`].
    fn begin_shadow(
        &self,
        name: &str,
        tables: &[String],
        from: Position,
    ) -> impl Future<Output = Result<Self::Tx>> + Send {
        let _ = (name, tables, from);
        async { no_shadows() }
    }

    /// Commits a shadow batch, moving the rebuild's checkpoint to `to`.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn commit_shadow(
        &self,
        tx: Self::Tx,
        name: &str,
        to: Position,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (tx, name, to);
        async { no_shadows() }
    }

    /// Opens the swap: a shadow transaction that also holds the live checkpoint's lock,
    /// so live batches wait until the swap commits.
    ///
    /// # Errors
    ///
    /// As [`Checkpoints::begin`].
    fn begin_swap(
        &self,
        name: &str,
        tables: &[String],
        from: Position,
    ) -> impl Future<Output = Result<Self::Tx>> + Send {
        let _ = (name, tables, from);
        async { no_shadows() }
    }

    /// Replaces the live `tables` with the shadow ones, sets the live checkpoint to `to`,
    /// replaces `name`'s dead letters with the rebuild's (recorded under `name@rebuild`),
    /// removes the shadow area and commits: readers see the old tables, then the new ones.
    ///
    /// # Errors
    ///
    /// Backend errors; nothing changes then.
    fn commit_swap(
        &self,
        tx: Self::Tx,
        name: &str,
        tables: &[String],
        to: Position,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (tx, name, tables, to);
        async { no_shadows() }
    }

    /// Drops an unfinished rebuild and its dead letters; returns whether there was one.
    /// Live tables are not touched.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn discard_shadow(&self, name: &str) -> impl Future<Output = Result<bool>> + Send {
        let _ = name;
        async { Ok(false) }
    }
}
