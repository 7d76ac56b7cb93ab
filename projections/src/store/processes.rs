use std::{future::Future, time::Duration};

use chrono::{DateTime, Utc};

use crate::Result;

/// A process manager's durable timer. One per (process, instance, name): setting it again
/// moves it; each carries the instance version that set it, so replaying an older
/// decision never undoes a newer one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    /// The process manager's persisted name.
    pub process: String,
    /// The instance.
    pub instance: String,
    /// The timer's name (the process manager's own, `"timeout"` say).
    pub name: String,
    /// When it fires (`None`: cancelled or fired).
    pub due_at: Option<DateTime<Utc>>,
    /// The instance's stream version of the decision that set or cancelled it.
    pub version: u64,
}

/// Process managers' durable timers and which of their instances are open.
pub trait ProcessStore: Clone + Send + Sync + 'static {
    /// Sets or cancels (`due_at: None`) a timer, unless the stored one was set by this
    /// decision or a later one (its version is not smaller): a replayed decision neither
    /// moves nor revives a timer.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn put_timer(&self, timer: &Timer) -> impl Future<Output = Result<()>> + Send;

    /// Claims up to `limit` of `process`'s timers that are due at `now`: each is hidden
    /// from other claims for `claim_for` (a worker that dies holding it lets it fire again
    /// after that: at least once, never before its time). Returns them with the due time
    /// they were claimed at.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn claim_due_timers(
        &self,
        process: &str,
        now: DateTime<Utc>,
        claim_for: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Timer>>> + Send;

    /// Marks a claimed timer fired, unless a decision moved or cancelled it meanwhile.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn timer_fired(&self, timer: &Timer) -> impl Future<Output = Result<()>> + Send;

    /// Records whether an instance is still open (for status).
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn put_instance(
        &self,
        process: &str,
        instance: &str,
        open: bool,
    ) -> impl Future<Output = Result<()>> + Send;

    /// How many of `process`'s instances are open, and how many timers are pending.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn process_counts(&self, process: &str) -> impl Future<Output = Result<(u64, u64)>> + Send;
}
