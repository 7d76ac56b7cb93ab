//! A subscription's metrics, registered once per worker start (labels are built and the
//! recorder looked up then, not per batch). Install the recorder before starting the
//! engine.

use metrics::{Counter, Gauge, Histogram};

#[derive(Debug)]
pub(crate) struct Meters {
    pub(crate) events_processed: Counter,
    pub(crate) batch_seconds: Histogram,
    pub(crate) handler_seconds: Histogram,
    pub(crate) lag_events: Gauge,
    pub(crate) lag_seconds: Gauge,
    pub(crate) horizon_lag: Gauge,
    pub(crate) dead_letters: Gauge,
    pub(crate) dead_letters_total: Counter,
}

impl Meters {
    pub(crate) fn new(subscription: &str) -> Self {
        let label = || [("subscription", subscription.to_owned())];
        Self {
            events_processed: metrics::counter!("annals_events_processed_total", &label()),
            batch_seconds: metrics::histogram!("annals_batch_duration_seconds", &label()),
            handler_seconds: metrics::histogram!("annals_handler_duration_seconds", &label()),
            lag_events: metrics::gauge!("annals_subscription_lag_events", &label()),
            lag_seconds: metrics::gauge!("annals_subscription_lag_seconds", &label()),
            horizon_lag: metrics::gauge!("annals_horizon_lag_events", &label()),
            dead_letters: metrics::gauge!("annals_dead_letters", &label()),
            dead_letters_total: metrics::counter!("annals_dead_letters_total", &label()),
        }
    }
}
