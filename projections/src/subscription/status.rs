//! What a subscription is doing, as a running worker publishes it and as `status` reports it.

use std::{
    collections::VecDeque,
    fmt,
    sync::Mutex,
    time::{Duration, Instant},
};

use annals_core::Position;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;

/// What a subscription is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionState {
    /// Handling events (catching up or following live).
    Running,
    /// A rebuild into shadow tables is under way, in some process (the live tables keep
    /// serving).
    Rebuilding,
    /// Waiting for another worker's lease.
    Standby,
    /// Stopped on an event that kept failing; see the error.
    Halted,
    /// Could not start, for a reason retrying cannot fix (credentials, configuration,
    /// privileges); see the error. Not restarted until the process is.
    Failed,
    /// Not running in this process (or, seen from outside every worker, in none).
    Stopped,
}

impl fmt::Display for SubscriptionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SubscriptionState::Running => "running",
            SubscriptionState::Rebuilding => "rebuilding",
            SubscriptionState::Standby => "standby",
            SubscriptionState::Halted => "halted",
            SubscriptionState::Failed => "failed",
            SubscriptionState::Stopped => "stopped",
        })
    }
}

/// One subscription's progress. Serializes (for `status --json`) with positions as
/// `{"commit": n, "sequence": n}`, times as RFC 3339 and `null` where unknown.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SubscriptionStatus {
    /// Persisted name.
    pub name: String,
    /// `projection`, `relay`, `process-manager`, ...
    pub kind: &'static str,
    /// What it is doing.
    pub state: SubscriptionState,
    /// Everything up to here is handled.
    pub checkpoint: Position,
    /// The log's head (never behind the checkpoint).
    pub head: Position,
    /// Head minus checkpoint, in global sequence numbers (0 when caught up): the
    /// processing lag.
    pub lag: u64,
    /// Events committed past the head that no reader can see yet, because an older
    /// transaction is still open somewhere on the server (the horizon lag; the same for
    /// every subscription of a store).
    pub horizon_lag: u64,
    /// When the newest event a reader can see (the head's) was recorded.
    pub last_event_at: Option<DateTime<Utc>>,
    /// When the event at the checkpoint was recorded: everything recorded up to about then
    /// is handled (`None` at the start, and for a bus subscription).
    pub checkpoint_event_at: Option<DateTime<Utc>>,
    /// When the checkpoint last moved (`None` before the first batch).
    pub checkpoint_at: Option<DateTime<Utc>>,
    /// When the oldest event it has yet to handle was recorded (`None` when caught up, and
    /// for a bus subscription).
    pub oldest_pending_at: Option<DateTime<Utc>>,
    /// How far behind it is in time: the age of the oldest event it has yet to handle
    /// (0 when caught up).
    pub lag_seconds: f64,
    /// Where an unfinished rebuild stands, while none runs (`rebuild` resumes it;
    /// `rebuild --discard` drops it). A running rebuild shows as state `rebuilding`.
    pub unfinished_rebuild: Option<Position>,
    /// Dead letters recorded for it (parked events included).
    pub dead_letters: usize,
    /// Figures of its kind (a process manager: `open_instances`, `pending_timers`).
    pub details: std::collections::BTreeMap<String, u64>,
    /// Recent throughput (0 when not running here).
    pub events_per_second: f64,
    /// Why it halted.
    pub error: Option<String>,
}

/// What a running worker publishes about itself.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) checkpoint: watch::Sender<Position>,
    pub(crate) state: watch::Sender<(SubscriptionState, Option<String>)>,
    pub(crate) meters: super::meters::Meters,
    rate: Mutex<VecDeque<(Instant, usize)>>,
}

const RATE_WINDOW: Duration = Duration::from_secs(10);

impl Shared {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            checkpoint: watch::channel(Position::START).0,
            state: watch::channel((SubscriptionState::Stopped, None)).0,
            meters: super::meters::Meters::new(name),
            rate: Mutex::default(),
        }
    }

    pub(crate) fn set_state(&self, state: SubscriptionState, error: Option<String>) {
        self.state.send_replace((state, error));
    }

    pub(crate) fn processed(&self, events: usize) {
        self.meters.events_processed.increment(events as u64);
        let mut rate = self.rate.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        rate.push_back((now, events));
        while rate
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
        {
            rate.pop_front();
        }
    }

    /// Events per second over the last few seconds.
    pub(crate) fn events_per_second(&self) -> f64 {
        let rate = self.rate.lock().unwrap_or_else(|p| p.into_inner());
        let Some((first, _)) = rate.front() else {
            return 0.0;
        };
        let events: usize = rate.iter().map(|(_, n)| n).sum();
        let span = first.elapsed().max(Duration::from_secs(1));
        events as f64 / span.as_secs_f64()
    }
}
