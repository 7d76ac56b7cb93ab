use std::time::Duration;

use annals_core::trace::Follow;

/// How the engine batches, waits and leases.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineOptions {
    /// Events per batch (one transaction each). Default 500.
    pub batch_size: usize,
    /// Longest wait for new events before re-checking (live following). Default 1 s.
    pub idle_wait: Duration,
    /// Take a lease so only one worker per projection runs across processes. Default true.
    /// Without it, checkpoint fencing still prevents double application, but workers race.
    pub use_lease: bool,
    /// How often a standby worker tries to take the lease. Default 1 s.
    pub lease_retry: Duration,
    /// How often a running worker checks that its lease is still alive. Default 1 s.
    pub lease_check: Duration,
    /// Pause before a worker restarts after an infrastructure error. Default 1 s.
    pub restart_backoff: Duration,
    /// How batches continue their events' traces (feature `otel` of annals-core):
    /// [`Follow::Parent`] (the default) makes a single event handled live the parent and
    /// links otherwise; [`Follow::Link`] always links; [`Follow::Off`] neither.
    pub trace: Follow,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            idle_wait: Duration::from_secs(1),
            use_lease: true,
            lease_retry: Duration::from_secs(1),
            lease_check: Duration::from_secs(1),
            restart_backoff: Duration::from_secs(1),
            trace: Follow::Parent,
        }
    }
}

impl EngineOptions {
    /// Events per batch.
    #[must_use]
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Take (or not) a lease per projection.
    #[must_use]
    pub fn use_lease(mut self, on: bool) -> Self {
        self.use_lease = on;
        self
    }

    /// How often a standby worker tries for the lease.
    #[must_use]
    pub fn lease_retry(mut self, every: Duration) -> Self {
        self.lease_retry = every;
        self
    }

    /// Longest idle wait while following live.
    #[must_use]
    pub fn idle_wait(mut self, wait: Duration) -> Self {
        self.idle_wait = wait;
        self
    }

    /// How batches continue their events' traces (see [`EngineOptions::trace`]).
    #[must_use]
    pub fn trace(mut self, follow: Follow) -> Self {
        self.trace = follow;
        self
    }

    /// Pause before restarting after an infrastructure error.
    #[must_use]
    pub fn restart_backoff(mut self, wait: Duration) -> Self {
        self.restart_backoff = wait;
        self
    }
}
