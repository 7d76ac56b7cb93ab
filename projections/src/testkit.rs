//! Given/when/then for projections (feature `testkit`): given these events, the read model
//! holds these rows. On the in-memory store with [`given`], and on PostgreSQL (feature
//! `postgres` too) with [`given_postgres`], in a throwaway database with the migrations
//! applied, so one projection is tested on the backend it runs on without a hand-written
//! fixture.

use std::time::Duration;

use annals_core::{encode_event, Encoding, EventStore, ExpectedVersion, Position};
use annals_store_memory::MemoryEventStore;

use crate::{CheckpointStore, MemoryCheckpoints, Projection, ProjectionEngine, Result};

/// Appends `events` to `store`, runs `projection` until it has caught up, and stops it.
async fn run_given<S, C, P, I, St>(store: S, checkpoints: C, projection: P, events: I) -> Result<()>
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
    P: Projection<C>,
    I: IntoIterator<Item = (St, P::Event)>,
    St: AsRef<str>,
{
    let mut head = Position::START;
    for (stream, event) in events {
        let event = encode_event(&event, Encoding::Json)?;
        head = store
            .append_to_stream(stream.as_ref(), ExpectedVersion::Any, vec![event])
            .await?
            .position;
    }
    let running = ProjectionEngine::new(store, checkpoints)
        .register(projection)
        .start();
    let caught_up = running
        .wait_until_caught_up(head, Duration::from_secs(10))
        .await;
    running.shutdown().await;
    caught_up
}

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
    let read = MemoryCheckpoints::new();
    run_given(MemoryEventStore::new(), read.clone(), projection, events).await?;
    Ok(read)
}

#[cfg(feature = "postgres")]
pub use self::postgres::{given_postgres, PgReadModel};

#[cfg(feature = "postgres")]
mod postgres {
    use annals_store_postgres::testkit::TestDatabase;

    use super::run_given;
    use crate::{PgCheckpoints, Projection, Result};

    /// A Postgres read model built by [`given_postgres`]: query it through
    /// [`pool`](PgReadModel::pool). Its throwaway database is dropped by
    /// [`drop_database`](PgReadModel::drop_database) (or, if the test panics first, left
    /// for the next `TestDatabase` run to clean up).
    #[derive(Debug)]
    pub struct PgReadModel {
        db: TestDatabase,
        checkpoints: PgCheckpoints,
    }

    impl PgReadModel {
        /// The pool of the throwaway database (the store's schema holds the events, the
        /// checkpoints and, by default, the read model's tables).
        pub fn pool(&self) -> &sqlx::PgPool {
            self.checkpoints.pool()
        }

        /// The checkpoints (status, dead letters) of the run.
        pub fn checkpoints(&self) -> &PgCheckpoints {
            &self.checkpoints
        }

        /// The throwaway database.
        pub fn database(&self) -> &TestDatabase {
            &self.db
        }

        /// Drops the throwaway database.
        pub async fn drop_database(self) {
            self.db.drop_database().await;
        }
    }

    /// As [`given`](super::given), on PostgreSQL: creates a throwaway database on the
    /// server of `DATABASE_URL` (default `postgres://root@127.0.0.1:5432/test`) with the
    /// annals migrations applied, appends `events`, runs `projection` until it has caught
    /// up, and returns the read model.
    ///
    /// ```no_run
    /// # use annals_projections::{testkit, PgCheckpoints, Projection};
    /// # async fn demo<P: Projection<PgCheckpoints>>(projection: P, events: Vec<(&str, P::Event)>) {
    /// let read = testkit::given_postgres(projection, events).await.expect("caught up");
    /// let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM account_balances")
    ///     .fetch_one(read.pool())
    ///     .await
    ///     .expect("query");
    /// read.drop_database().await;
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`given`](super::given).
    ///
    /// # Panics
    ///
    /// When the server cannot be reached or the database cannot be created (a test
    /// environment problem, not the projection's).
    pub async fn given_postgres<P, I, St>(projection: P, events: I) -> Result<PgReadModel>
    where
        P: Projection<PgCheckpoints>,
        I: IntoIterator<Item = (St, P::Event)>,
        St: AsRef<str>,
    {
        let db = TestDatabase::new().await;
        let store = db.store().clone();
        let checkpoints = PgCheckpoints::new(&store);
        let outcome = run_given(store, checkpoints.clone(), projection, events).await;
        match outcome {
            Ok(()) => Ok(PgReadModel { db, checkpoints }),
            Err(error) => {
                db.drop_database().await;
                Err(error)
            }
        }
    }
}
