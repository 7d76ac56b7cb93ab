//! What a subscription does when handling an event fails: how often it retries, and then
//! whether it halts, dead-letters the event, or parks its stream behind it.

use std::time::Duration;

/// What the engine does with an event whose handler still fails after the retries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Stop this subscription (the others go on); its status shows the error and the
    /// checkpoint stays before the failing event. Restarting the worker tries again; the
    /// operator can also skip the event into the dead letters from the CLI.
    #[default]
    Halt,
    /// Record a dead letter (event, error, attempts, time) in the same transaction that
    /// moves the checkpoint past the event, and go on with every stream, that event's
    /// included.
    DeadLetter,
    /// As `DeadLetter`, and park the later events of the same stream behind it (as dead
    /// letters marked parked) until the operator retries or discards it: a stream's
    /// effects never happen out of order (Axon's sequenced dead-letter queue).
    Park,
}

/// How often, and how patiently, a failing event is retried before the policy applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubles each time, up to `max_backoff`.
    pub backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `n` (1-based), before jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }

    /// [`delay`](RetryPolicy::delay) with up to a quarter of it added at random, so that
    /// workers failing together do not retry in lockstep.
    pub fn delay_with_jitter(&self, attempt: u32) -> Duration {
        jitter(self.delay(attempt))
    }
}

/// `d` plus up to a quarter of it, at random.
pub(crate) fn jitter(d: Duration) -> Duration {
    let quarter = u64::try_from(d.as_nanos() / 4).unwrap_or(u64::MAX);
    d + Duration::from_nanos(fastrand::u64(0..=quarter))
}
