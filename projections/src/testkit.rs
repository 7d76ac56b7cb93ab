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

pub use self::process::{ProcessTest, Step};

mod process {
    use std::{collections::BTreeMap, time::Duration};

    use annals_core::{Envelope, Metadata, Position};

    use crate::{Input, ProcessManager, TimerChange};

    /// Given/when/then for a [`ProcessManager`], pure (no store, no runtime) and with a
    /// virtual clock: given its past decisions, when an event arrives, a command is refused
    /// or time passes, then these decisions, commands and timers.
    ///
    /// ```
    /// # use annals_projections::{testkit::ProcessTest, Input, ProcessManager, TimerChange};
    /// # fn demo<P: ProcessManager>(started: P::Event, event: P::Observed) {
    /// let mut transfer = ProcessTest::<P>::given([started]);
    /// let step = transfer.when_event("account-ada", event);
    /// // step.decisions, step.commands; then let the clock run:
    /// let fired = transfer.advance(std::time::Duration::from_secs(30));
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct ProcessTest<P: ProcessManager> {
        state: P,
        now: Duration,
        timers: BTreeMap<String, Duration>,
    }

    /// What one input led to.
    #[derive(Debug)]
    pub struct Step<P: ProcessManager> {
        /// The decisions recorded.
        pub decisions: Vec<P::Event>,
        /// The commands they send, in order.
        pub commands: Vec<P::Command>,
    }

    impl<P: ProcessManager> ProcessTest<P> {
        /// An instance whose stream holds `decisions` (their timers set at time zero).
        pub fn given(decisions: impl IntoIterator<Item = P::Event>) -> Self {
            let mut test = Self {
                state: P::default(),
                now: Duration::ZERO,
                timers: BTreeMap::new(),
            };
            for decision in decisions {
                test.record(&decision);
            }
            test
        }

        fn record(&mut self, decision: &P::Event) {
            self.state.apply(decision);
            for change in P::timers(decision) {
                match change {
                    TimerChange::Set { name, after } => {
                        self.timers.insert(name, self.now + after);
                    }
                    TimerChange::Cancel { name } => {
                        self.timers.remove(&name);
                    }
                }
            }
        }

        /// Decides on `input` and records the decisions.
        pub fn when(&mut self, input: Input<P::Observed, P::Command>) -> Step<P> {
            let decisions = self.state.decide(&input);
            for decision in &decisions {
                self.record(decision);
            }
            let commands = decisions.iter().flat_map(P::commands).collect();
            Step {
                decisions,
                commands,
            }
        }

        /// [`when`](ProcessTest::when) an event of stream `stream_id` arrives.
        pub fn when_event(&mut self, stream_id: &str, event: P::Observed) -> Step<P> {
            let envelope = Envelope {
                event_id: uuid::Uuid::now_v7(),
                stream_id: stream_id.to_owned(),
                stream_version: 1,
                position: Position::START,
                event_type: String::new(),
                schema_version: 1,
                recorded_at: chrono::Utc::now(),
                metadata: Metadata::default(),
                payload: event,
            };
            self.when(Input::Event(envelope))
        }

        /// [`when`](ProcessTest::when) its target refuses `command`.
        pub fn when_rejected(&mut self, command: P::Command, reason: &str) -> Step<P> {
            self.when(Input::Rejected {
                command,
                reason: reason.to_owned(),
            })
        }

        /// Moves the virtual clock on by `by`, firing the timers that fall due, in order
        /// (each at most once, as the runtime does when nothing crashes).
        pub fn advance(&mut self, by: Duration) -> Vec<Step<P>> {
            let until = self.now + by;
            let mut fired = Vec::new();
            loop {
                let next = self
                    .timers
                    .iter()
                    .filter(|(_, due)| **due <= until)
                    .min_by_key(|(_, due)| **due)
                    .map(|(name, due)| (name.clone(), *due));
                let Some((name, due)) = next else { break };
                self.timers.remove(&name);
                self.now = due;
                fired.push(self.when(Input::Timer { name }));
            }
            self.now = until;
            fired
        }

        /// The instance's state.
        pub fn state(&self) -> &P {
            &self.state
        }

        /// The pending timers, by name, with how long from now each is due.
        pub fn timers(&self) -> BTreeMap<String, Duration> {
            self.timers
                .iter()
                .map(|(name, due)| (name.clone(), due.saturating_sub(self.now)))
                .collect()
        }
    }
}
