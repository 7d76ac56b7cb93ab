use annals_core::Position;

/// `Result` with the projection engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong running projections.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The event store or the checkpoint store failed.
    #[error(transparent)]
    Store(#[from] annals_core::Error),

    /// Another worker moved the checkpoint since this batch began: this worker is stale
    /// and its batch was rolled back. It steps down and re-acquires the lease.
    #[error("projection `{projection}` was moved by another worker: expected checkpoint {expected}, found {actual}")]
    Fenced {
        /// The projection.
        projection: String,
        /// Where this worker thought it was.
        expected: Position,
        /// Where the checkpoint is.
        actual: Position,
    },

    /// Something the subscription depends on is down (a broker, a database); not the
    /// event's fault. The worker restarts after a backoff.
    #[error("subscription `{subscription}` cannot reach what it delivers to: {error}")]
    Unavailable {
        /// The subscription.
        subscription: String,
        /// What failed.
        error: String,
    },

    /// A parked event was retried while the dead letter its stream is parked behind is
    /// still there: retry or discard that one first (a stream's events apply in order).
    #[error("dead letter {id} is parked behind dead letter {head} of the same stream: retry or discard {head} first")]
    ParkedBehind {
        /// The letter asked for.
        id: i64,
        /// The stream's head letter.
        head: i64,
    },

    /// The projection halted on an event that kept failing.
    #[error("projection `{projection}` is halted: {error}")]
    Halted {
        /// The projection.
        projection: String,
        /// The handler's last error.
        error: String,
    },

    /// A subscription could not start, for a reason retrying cannot fix (credentials,
    /// configuration, privileges); its worker stopped.
    #[error("subscription `{subscription}` cannot start: {error}")]
    Failed {
        /// The subscription.
        subscription: String,
        /// Why.
        error: String,
    },

    /// The database's annals schema is missing or older than this release.
    #[error("schema {schema} in database {database} is not up to date ({pending} migrations pending): run `migrate` (as the schema's owner)")]
    NotMigrated {
        /// The schema.
        schema: String,
        /// The database.
        database: String,
        /// How many migrations are pending.
        pending: usize,
    },

    /// `skip` was asked for a subscription that is not halted (nothing to skip), or one
    /// that reads a bus (its messages are skipped on the bus).
    #[error("subscription `{subscription}` has nothing to skip: {reason}")]
    NothingToSkip {
        /// The subscription.
        subscription: String,
        /// Why.
        reason: String,
    },

    /// `status --check` found problems.
    #[error("unhealthy: {}", .0.join("; "))]
    Unhealthy(Vec<String>),

    /// An operation was interrupted by a signal (Ctrl-C, SIGTERM); what it did so far is
    /// kept and it can be run again.
    #[error("{0} interrupted by a signal")]
    Interrupted(String),

    /// No projection by that name is registered.
    #[error("unknown projection `{name}`; known: {}", known.join(", "))]
    UnknownProjection {
        /// The name asked for.
        name: String,
        /// The registered names.
        known: Vec<String>,
    },

    /// No dead letter has that id.
    #[error("no dead letter with id {0}")]
    DeadLetterNotFound(i64),

    /// A projection's `setup` or a dead-letter retry failed in its handler (the handler's
    /// error is the [`source`](std::error::Error::source), printed once by reporters that
    /// walk the chain).
    #[error("projection `{projection}`: the handler failed")]
    Handler {
        /// The projection.
        projection: String,
        /// The handler's error.
        source: crate::HandlerError,
    },

    /// The operation needs something this backend or projection does not offer.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),

    /// A rebuild stopped on an event its handler refused (the projection's policy is
    /// `Halt`); rerun it after the fix and it resumes where it stopped, or rerun it with
    /// `--skip-failures` to dead-letter such events instead.
    #[error("rebuild of `{projection}` stopped at event {position}: {error} (fix and rerun to resume, or rerun with --skip-failures to dead-letter it)")]
    RebuildFailed {
        /// The projection.
        projection: String,
        /// The event it stopped at.
        position: Position,
        /// The handler's error.
        error: String,
    },

    /// The engine was shut down while a caller was waiting on it.
    #[error("the projection engine has shut down")]
    ShutDown,

    /// Waiting for a projection to catch up took longer than the caller allowed.
    #[error("projection `{projection}` did not reach {target} in time (at {checkpoint})")]
    Timeout {
        /// The projection.
        projection: String,
        /// The position waited for.
        target: Position,
        /// Where it got to.
        checkpoint: Position,
    },
}

impl Error {
    /// The error and its causes on one line (`a: b: c`), as stored in a dead letter.
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !out.contains(&cause_text) {
                out.push_str(": ");
                out.push_str(&cause_text);
            }
            source = cause.source();
        }
        out
    }

    pub(crate) fn backend(error: impl Into<annals_core::BoxError>) -> Self {
        Error::Store(annals_core::Error::backend(error))
    }
}
