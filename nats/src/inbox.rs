//! Inbox consumers: a service reads the events a relay published, from a durable JetStream
//! pull consumer, and applies each exactly once and in its stream's order, with the same
//! [`Projection`] a read model of the local log uses.
//!
//! How it holds (PostgreSQL, in the service's own database and annals schema):
//! - **Exactly once.** The handler's writes and the event's inbox row `(consumer,
//!   event_id)` commit in one transaction; the message is acknowledged after the commit and
//!   the server confirms the acknowledgement (double ack). A crash between commit and ack
//!   redelivers the message, and the inbox (or the stream's version) says it was applied:
//!   it is acknowledged without running the handler.
//! - **Stream order.** Per consumer and stream, `inbox_streams` keeps the last version
//!   passed (applied, skipped as a type the projection does not read, dead-lettered or
//!   parked). An event applies only when its previous version (the relay's
//!   `annals-previous-version` header, so type filters leave no gap) is that version; an
//!   earlier one still on its way makes it wait, held by this process and re-checked, never
//!   NAKed: waiting is not a delivery and never counts toward the retry limit. The stream's
//!   row is locked while a batch handles it, so processes sharing one durable consumer take
//!   turns per stream. The first event of a stream the consumer has never seen applies
//!   without a predecessor only when it is the first message of its subject JetStream still
//!   holds (earlier ones expired by the stream's limits).
//! - **Failures.** A handler error is retried by redelivery (NAK with a growing delay) up to
//!   [`RetryPolicy::attempts`] deliveries, then the [`FailurePolicy`] applies: halt, or a
//!   dead letter that keeps the whole message (so `dead-letters retry` works after the bus
//!   dropped it), with the later events of its stream parked behind it under
//!   [`FailurePolicy::Park`]. A message that is not an annals event, or whose payload does
//!   not decode, is poison: the policy applies at once.
//! - **Retention.** Inbox rows older than [`InboxOptions::retention`] are purged in small
//!   batches. Deduplication does not end there: a redelivered event whose stream has passed
//!   its version is still recognised by the stream's row, which is never purged. The
//!   inbox rows are the record of what was applied when, and what a redelivery racing its
//!   own first delivery is caught by.

mod batch;
mod message;
mod store;
mod worker;

use std::{sync::Arc, time::Duration};

use annals_core::Upcasters;
use annals_projections::{
    BusProgress, BusSubscription, CancellationToken, DeadLetter, EngineOptions, FailurePolicy,
    PgCheckpoints, Projection, RetryPolicy, WorkerStatus,
};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use tokio::sync::Mutex;

use crate::{Error, NatsOptions, Result};

/// How an inbox consumer reads the bus.
#[derive(Clone, Debug)]
pub struct InboxOptions {
    stream: String,
    filter_subject: String,
    batch: usize,
    ack_wait: Duration,
    max_ack_pending: i64,
    retention: Duration,
    policy: FailurePolicy,
    retry: RetryPolicy,
    recheck: Duration,
}

impl Default for InboxOptions {
    fn default() -> Self {
        Self {
            stream: "ANNALS".to_owned(),
            filter_subject: "annals.>".to_owned(),
            batch: 100,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1000,
            retention: Duration::from_secs(7 * 24 * 3600),
            policy: FailurePolicy::Park,
            retry: RetryPolicy::default(),
            recheck: Duration::from_millis(50),
        }
    }
}

impl InboxOptions {
    /// Defaults: the JetStream stream `ANNALS`, every subject under `annals.`, batches of
    /// 100, 30 s to acknowledge, 1,000 messages in flight, inbox rows kept 7 days, three
    /// deliveries, then park the stream behind a dead letter.
    pub fn new() -> Self {
        Self::default()
    }

    /// The JetStream stream to read (the relay's).
    #[must_use]
    pub fn stream(mut self, name: impl Into<String>) -> Self {
        self.stream = name.into();
        self
    }

    /// Only these subjects (one filter: nats-server 2.9 takes one per consumer), for
    /// example `annals.account.>` for one category.
    #[must_use]
    pub fn filter_subject(mut self, subject: impl Into<String>) -> Self {
        self.filter_subject = subject.into();
        self
    }

    /// Messages per batch (one transaction each).
    #[must_use]
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// How long JetStream waits for an acknowledgement before redelivering (the consumer
    /// signals progress on messages it holds for order).
    #[must_use]
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// Messages delivered and not yet acknowledged, at most, across the processes that
    /// share the consumer.
    #[must_use]
    pub fn max_ack_pending(mut self, n: i64) -> Self {
        self.max_ack_pending = n.max(1);
        self
    }

    /// How long inbox rows are kept.
    #[must_use]
    pub fn retention(mut self, keep: Duration) -> Self {
        self.retention = keep;
        self
    }

    /// What to do with a message that keeps failing.
    #[must_use]
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Deliveries before the failure policy applies, and the delays between them.
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// A JetStream consumer that applies each event once, in stream order, through `P`.
///
/// ```no_run
/// # use annals_nats::{InboxConsumer, InboxOptions, NatsOptions};
/// # use annals_projections::{PgCheckpoints, ProjectionEngine, Projection};
/// # async fn demo<P: Projection<PgCheckpoints>>(
/// #     store: annals_store_postgres::PgEventStore,
/// #     balances: P,
/// # ) -> annals_nats::Result<()> {
/// // The service's own database and annals schema (migrated), its read model, the bus.
/// let consumer = InboxConsumer::new(
///     "statements",
///     NatsOptions::from_env()?,
///     InboxOptions::new().filter_subject("annals.account.>"),
///     balances,
/// );
/// consumer.connect().await?; // fail fast on a misconfiguration
/// let running = ProjectionEngine::new(store.clone(), PgCheckpoints::new(&store))
///     .consume(consumer)
///     .start();
/// # running.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct InboxConsumer<P> {
    inner: Arc<Inner<P>>,
}

pub(crate) struct Inner<P> {
    name: String,
    nats: NatsOptions,
    options: InboxOptions,
    projection: P,
    /// The projection's event types, asked once.
    handled: Vec<String>,
    upcasters: Upcasters,
    connection: Mutex<Option<Arc<Connection>>>,
}

/// A live connection to the consumer.
pub(crate) struct Connection {
    pub(crate) stream: async_nats::jetstream::stream::Stream,
    pub(crate) consumer: PullConsumer,
}

impl<P> std::fmt::Debug for InboxConsumer<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxConsumer")
            .field("name", &self.inner.name)
            .field("nats", &self.inner.nats)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// A durable name JetStream accepts: letters, digits, `-` and `_`.
fn check_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "invalid consumer name {name:?}: use letters, digits, - and _ (it names the durable JetStream consumer)"
        )))
    }
}

impl<P: Projection<PgCheckpoints>> InboxConsumer<P> {
    /// A consumer named `name` (the durable JetStream consumer, the inbox's key and the
    /// dead letters' subscription name) feeding `projection`. No I/O.
    pub fn new(
        name: impl Into<String>,
        nats: NatsOptions,
        options: InboxOptions,
        projection: P,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: name.into(),
                nats,
                options,
                handled: projection.event_types(),
                projection,
                upcasters: Upcasters::new(),
                connection: Mutex::new(None),
            }),
        }
    }

    /// Decodes payloads through these upcasters.
    #[must_use]
    pub fn with_upcasters(self, upcasters: Upcasters) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.upcasters = upcasters;
                Self {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => Self { inner },
        }
    }

    /// Connects and creates (or checks) the durable consumer, now: the way to fail fast on
    /// a misconfiguration.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid name or a durable consumer of that name with
    /// another filter; connection errors as [`NatsOptions::connect`]; [`Error::Request`]
    /// when the stream does not exist (yet: a worker waits for it).
    pub async fn connect(&self) -> Result<()> {
        self.inner.connection().await.map(drop)
    }
}

impl<P> Inner<P> {
    pub(crate) async fn connection(&self) -> Result<Arc<Connection>> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = &*slot {
            return Ok(Arc::clone(connection));
        }
        check_name(&self.name)?;
        let servers = self.nats.servers_display();
        let client = self.nats.connect().await?;
        let js = async_nats::jetstream::ContextBuilder::new()
            .timeout(self.nats.request_timeout_value())
            .build(client);
        // A stream that does not exist yet is worth waiting for: its relay creates it.
        let stream = js.get_stream(&self.options.stream).await.map_err(|e| {
            Error::Request(format!(
                "the JetStream stream {} cannot be read at {servers} (has a relay created it?): {e}",
                self.options.stream
            ))
        })?;
        let config = pull::Config {
            durable_name: Some(self.name.clone()),
            filter_subject: self.options.filter_subject.clone(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.options.ack_wait,
            // Unlimited: the retry limit is the consumer's, counted in handler failures.
            max_deliver: -1,
            max_ack_pending: self.options.max_ack_pending,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        };
        let consumer: PullConsumer = stream
            .get_or_create_consumer(&self.name, config)
            .await
            .map_err(|e| Error::Request(format!("creating the consumer {}: {e}", self.name)))?;
        let filter = &consumer.cached_info().config.filter_subject;
        if filter != &self.options.filter_subject {
            return Err(Error::Config(format!(
                "the durable consumer {} exists with filter {filter:?}, not {:?}: delete it or use another name",
                self.name, self.options.filter_subject
            )));
        }
        let connection = Arc::new(Connection { stream, consumer });
        *slot = Some(Arc::clone(&connection));
        Ok(connection)
    }

    /// Forgets the connection (after a failure), so the next use reconnects.
    pub(crate) async fn reset_connection(&self) {
        *self.connection.lock().await = None;
    }
}

impl<P: Projection<PgCheckpoints>> BusSubscription<PgCheckpoints> for InboxConsumer<P> {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn on_failure(&self) -> FailurePolicy {
        self.inner.options.policy
    }

    async fn run(
        self: Arc<Self>,
        checkpoints: PgCheckpoints,
        options: EngineOptions,
        status: WorkerStatus,
        token: CancellationToken,
    ) {
        worker::run(Arc::clone(&self.inner), checkpoints, options, status, token).await;
    }

    async fn retry(
        &self,
        checkpoints: &PgCheckpoints,
        letter: DeadLetter,
    ) -> annals_projections::Result<()> {
        let stream = letter.stream_id.clone();
        self.inner.apply_letter(checkpoints, &letter).await?;
        if self.inner.options.policy == FailurePolicy::Park {
            self.inner.release(checkpoints, stream).await?;
        }
        Ok(())
    }

    async fn release(
        &self,
        checkpoints: &PgCheckpoints,
        stream_id: String,
    ) -> annals_projections::Result<()> {
        self.inner.release(checkpoints, stream_id).await
    }

    async fn progress(&self) -> Option<BusProgress> {
        let connection = self.inner.connection().await.ok()?;
        let info = connection.consumer.get_info().await.ok()?;
        let acknowledged = info.ack_floor.stream_sequence;
        let pending = info.num_pending + info.num_ack_pending as u64;
        Some(BusProgress {
            acknowledged: annals_core::Position::new(0, acknowledged),
            head: annals_core::Position::new(0, info.delivered.stream_sequence + info.num_pending),
            pending,
            active: info.num_waiting > 0,
        })
    }
}
