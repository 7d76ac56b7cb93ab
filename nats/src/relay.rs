//! The relay: a subscription that publishes the global log to NATS JetStream, each event
//! once, each stream in order, the checkpoint moving only past acknowledged publishes.

use std::{
    collections::HashMap,
    fmt,
    future::IntoFuture,
    sync::{Arc, Mutex, MutexGuard},
};

use annals_core::{Position, RecordedEvent};
use annals_projections::{
    Checkpoints, Failure, FailurePolicy, HandlerError, RetryPolicy, Subscriber,
};
use async_nats::jetstream::{
    self,
    context::PublishErrorKind,
    stream::{LastRawMessageErrorKind, Stream},
    ErrorCode,
};
use bytes::Bytes;
use futures_util::{
    stream::{FuturesOrdered, FuturesUnordered},
    StreamExt,
};
use tracing::{debug, info, Instrument};

use crate::{
    headers::{self, Published},
    stream::ensure_stream,
    subject::{category, SubjectRule},
    NatsOptions, Result, StreamSettings,
};

/// How a relay selects, names and publishes events.
#[derive(Clone)]
pub struct RelayOptions {
    stream: StreamSettings,
    categories: Option<Vec<String>>,
    event_types: Option<Vec<String>>,
    subject: SubjectRule,
    source: Option<String>,
    max_in_flight: usize,
    policy: FailurePolicy,
    retry: RetryPolicy,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            stream: StreamSettings::default(),
            categories: None,
            event_types: None,
            subject: SubjectRule::default(),
            source: None,
            max_in_flight: 1024,
            policy: FailurePolicy::Park,
            retry: RetryPolicy::default(),
        }
    }
}

impl RelayOptions {
    /// Defaults: every event, subjects `annals.<category>.<stream id>` in the stream
    /// `ANNALS`, 1024 messages in flight, park a stream behind an event that cannot be
    /// published.
    pub fn new() -> Self {
        Self::default()
    }

    /// The JetStream stream and subject prefix.
    #[must_use]
    pub fn stream(mut self, settings: StreamSettings) -> Self {
        self.stream = settings;
        self
    }

    /// Publish only streams of these categories (the part of the stream id before the
    /// first `-`).
    #[must_use]
    pub fn categories<I: IntoIterator<Item = T>, T: Into<String>>(mut self, categories: I) -> Self {
        self.categories = Some(categories.into_iter().map(Into::into).collect());
        self
    }

    /// Publish only events of these types. Each message then carries the version of the
    /// previous message on its subject, so consumers can check order across the gaps.
    #[must_use]
    pub fn event_types<I: IntoIterator<Item = T>, T: Into<String>>(mut self, types: I) -> Self {
        self.event_types = Some(types.into_iter().map(Into::into).collect());
        self
    }

    /// How subjects are named (default: by category and stream id).
    #[must_use]
    pub fn subject(mut self, rule: SubjectRule) -> Self {
        self.subject = rule;
        self
    }

    /// The CloudEvents `ce-source` of every message (default `annals://<relay name>`).
    #[must_use]
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// How many messages are in flight at most, across subjects (each subject one message
    /// at a time, so a stream's order holds whatever fails).
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// What to do with an event that cannot be published (default: park its stream).
    #[must_use]
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Retries of a failing publish before the failure policy applies.
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

struct Connection {
    js: jetstream::Context,
    stream: Stream,
}

/// What the relay knows of the bus between batches.
#[derive(Default)]
struct State {
    /// The last position that may have been published without its checkpoint committing
    /// (a batch published before a crash, or one that failed half-way): events up to it
    /// may already be on the bus, past the duplicate window.
    high_water: Position,
    /// The stream version of the last message known on a subject (looked up, or
    /// published), for events up to `high_water` and for the previous-version header.
    last_on_subject: HashMap<String, u64>,
}

/// Entries of `last_on_subject` kept for the previous-version header before it is cleared
/// (it is a cache: a cleared entry costs one look-up).
const SUBJECT_CACHE: usize = 100_000;

struct Inner {
    name: String,
    nats: NatsOptions,
    options: RelayOptions,
    source: String,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
    state: Mutex<State>,
    /// `annals_relay_published_total`, registered at the first publish.
    published: std::sync::OnceLock<metrics::Counter>,
}

/// Publishes the global log to NATS JetStream: register it on a
/// [`ProjectionEngine`](annals_projections::ProjectionEngine) with `subscribe`, like any
/// subscription (checkpoint, lease, retries, status, dead letters).
///
/// Each event goes to its stream's subject (`<prefix>.<category>.<stream id>` by default)
/// with `Nats-Msg-Id` = its event id and the whole envelope in headers (see
/// [`headers`](crate::headers)). Subjects are published concurrently, each one message at a
/// time, so a failed publish never leaves a later event of a stream stored before an earlier
/// one. The checkpoint moves only past acknowledged publishes; after a restart the relay
/// looks up the last message of each subject it may have published before the crash and
/// skips what is already there, so nothing is published twice even past JetStream's
/// duplicate window.
///
/// ```no_run
/// use annals_nats::{NatsOptions, Relay, RelayOptions};
/// # async fn demo(store: annals_store_postgres::PgEventStore) -> Result<(), Box<dyn std::error::Error>> {
/// let relay = Relay::new("bank-relay", NatsOptions::from_env()?, RelayOptions::new().categories(["account"]));
/// relay.connect().await?; // fail fast on a misconfiguration
/// let engine = annals_projections::ProjectionEngine::new(
///     store.clone(),
///     annals_projections::PgCheckpoints::new(&store),
/// )
/// .subscribe(relay);
/// let running = engine.start();
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("name", &self.inner.name)
            .field("servers", &self.inner.nats.servers_display())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RelayOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayOptions")
            .field("stream", &self.stream)
            .field("categories", &self.categories)
            .field("event_types", &self.event_types)
            .field("subject", &self.subject)
            .field("max_in_flight", &self.max_in_flight)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn boxed(error: impl fmt::Display) -> HandlerError {
    error.to_string().into()
}

impl Relay {
    /// A relay named `name` (its checkpoint, lease and dead letters are keyed by it). No
    /// I/O: it connects when its worker starts, or on [`connect`](Relay::connect).
    pub fn new(name: impl Into<String>, nats: NatsOptions, options: RelayOptions) -> Self {
        let name = name.into();
        let source = options
            .source
            .clone()
            .unwrap_or_else(|| format!("annals://{name}"));
        Self {
            inner: Arc::new(Inner {
                name,
                nats,
                options,
                source,
                connection: tokio::sync::Mutex::new(None),
                state: Mutex::new(State::default()),
                published: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Connects and creates or checks the JetStream stream, now (a worker does it when it
    /// starts): the way to fail fast on a misconfiguration.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`](crate::Error::Unreachable), `Unauthorized`, `Tls`,
    /// `JetStreamUnavailable`, [`Error::Stream`](crate::Error::Stream) for a stream that
    /// exists with other subjects or retention.
    pub async fn connect(&self) -> Result<()> {
        self.connection().await.map(drop)
    }

    /// The relay's JetStream stream settings.
    pub fn stream_settings(&self) -> &StreamSettings {
        &self.inner.options.stream
    }

    async fn connection(&self) -> Result<Arc<Connection>> {
        let mut slot = self.inner.connection.lock().await;
        if let Some(connection) = &*slot {
            return Ok(Arc::clone(connection));
        }
        let nats = &self.inner.nats;
        let client = nats.connect().await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(nats.request_timeout_value())
            .build(client);
        let stream =
            ensure_stream(&js, &self.inner.options.stream, &nats.servers_display()).await?;
        info!(relay = %self.inner.name, stream = %self.inner.options.stream.name, servers = %nats.servers_display(), "relay connected");
        let connection = Arc::new(Connection { js, stream });
        *slot = Some(Arc::clone(&connection));
        Ok(connection)
    }

    fn selected(&self, event: &RecordedEvent) -> bool {
        self.inner
            .options
            .categories
            .as_ref()
            .is_none_or(|c| c.iter().any(|c| c == category(&event.stream_id)))
    }

    /// The stream version of the last message on `subject` (0: none).
    async fn last_on_subject(&self, stream: &Stream, subject: &str) -> Result<u64, Failure> {
        match stream.get_last_raw_message_by_subject(subject).await {
            Ok(message) => {
                let version = message
                    .headers
                    .get(headers::STREAM_VERSION)
                    .and_then(|v| v.as_str().parse().ok());
                version.ok_or_else(|| {
                    Failure::Poison(boxed(format!(
                        "the last message on {subject} (#{}) has no {} header: another publisher shares the relay's subjects",
                        message.sequence,
                        headers::STREAM_VERSION
                    )))
                })
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(e) => Err(Failure::Unavailable(boxed(format!(
                "looking up the last message on {subject}: {e}"
            )))),
        }
    }

    /// Where the last batch published before this worker started may have ended: the
    /// batch-end header of the stream's last message.
    async fn high_water(&self, stream: &Stream) -> Result<Position, Failure> {
        let all = self.inner.options.stream.subjects();
        match stream.get_last_raw_message_by_subject(&all).await {
            Ok(message) => Ok(message
                .headers
                .get(headers::BATCH_END)
                .and_then(|v| headers::parse_position(v.as_str()))
                .unwrap_or(Position::START)),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(Position::START),
            Err(e) => Err(Failure::Unavailable(boxed(format!(
                "looking up the stream's last message: {e}"
            )))),
        }
    }

    /// Learns the last version on each chain's subject where the relay must know it:
    /// events that may already be on the bus (up to the high-water mark), or a type filter
    /// (for the previous-version header). Look-ups run concurrently.
    async fn learn_last(
        &self,
        connection: &Connection,
        chains: &mut [Chain<'_>],
        high_water: Position,
    ) -> Result<(), Failure> {
        let filtered = self.inner.options.event_types.is_some();
        let mut lookups = FuturesUnordered::new();
        {
            let state = lock(&self.inner.state);
            for (i, chain) in chains.iter_mut().enumerate() {
                chain.last = state.last_on_subject.get(&chain.subject).copied();
                let needs = filtered
                    || chain
                        .events
                        .first()
                        .is_some_and(|e| e.position <= high_water);
                if chain.last.is_none() && needs {
                    let subject = chain.subject.clone();
                    lookups.push(async move {
                        (i, self.last_on_subject(&connection.stream, &subject).await)
                    });
                }
            }
        }
        while let Some((i, version)) = lookups.next().await {
            let version = version?;
            chains[i].last = Some(version);
            lock(&self.inner.state)
                .last_on_subject
                .insert(chains[i].subject.clone(), version);
        }
        Ok(())
    }

    /// Publishes the chains in waves: each wave publishes the next event of every subject
    /// that has one, all at once, and waits for their acknowledgements; so a subject's next
    /// event goes out only once the previous one is stored.
    async fn publish_waves(
        &self,
        connection: &Connection,
        chains: &mut [Chain<'_>],
        batch_end: Position,
        high_water: Position,
    ) -> Vec<Failure> {
        let filtered = self.inner.options.event_types.is_some();
        let mut failures = Vec::new();
        loop {
            let mut acks = FuturesOrdered::new();
            let mut members = Vec::new();
            for (i, chain) in chains.iter_mut().enumerate() {
                if members.len() >= self.inner.options.max_in_flight {
                    break;
                }
                if chain.failed {
                    continue;
                }
                // Skip what is already on the bus (only possible up to the high-water mark).
                while let Some(event) = chain.events.get(chain.next) {
                    if event.position <= high_water
                        && chain.last.is_some_and(|v| event.stream_version <= v)
                    {
                        debug!(subject = %chain.subject, version = event.stream_version, "already on the bus");
                        chain.next += 1;
                    } else {
                        break;
                    }
                }
                let Some(event) = chain.events.get(chain.next).copied() else {
                    continue;
                };
                let previous = if filtered {
                    chain.last.unwrap_or(0)
                } else {
                    event.stream_version - 1
                };
                // The publish continues the event's trace; the consumer continues the
                // publish's (its context goes in the headers).
                let span = tracing::info_span!(
                    "annals.publish",
                    subject = %chain.subject,
                    version = event.stream_version
                );
                annals_core::trace::follow(
                    &span,
                    &event.metadata,
                    annals_core::trace::Follow::Parent,
                );
                let trace = annals_core::trace::context_of(&span);
                // Where consumers in other languages find the payload's schema: its type
                // and schema version under the relay's source.
                let dataschema = format!(
                    "{}/schemas/{}/{}",
                    self.inner.source, event.event_type, event.schema_version
                );
                let published = Published {
                    relay: &self.inner.name,
                    source: &self.inner.source,
                    previous_version: previous,
                    batch_end,
                    dataschema: Some(&dataschema),
                    trace: trace.as_ref(),
                };
                let sent = match headers::to_headers(event, &published) {
                    Ok(headers) => connection
                        .js
                        .publish_with_headers(
                            chain.subject.clone(),
                            headers,
                            Bytes::from(event.payload.clone()),
                        )
                        .await
                        .map_err(|e| publish_failure(&e, event)),
                    Err(e) => Err(Failure::Poison(boxed(e))),
                };
                match sent {
                    Ok(ack) => {
                        acks.push_back(ack.into_future());
                        members.push(i);
                    }
                    Err(failure) => {
                        chain.failed = true;
                        failures.push(failure);
                    }
                }
            }
            if members.is_empty() {
                return failures;
            }
            let mut members = members.into_iter();
            while let Some(ack) = acks.next().await {
                let Some(i) = members.next() else { break };
                let chain = &mut chains[i];
                let event = chain.events[chain.next];
                match ack {
                    Ok(ack) => {
                        debug!(subject = %chain.subject, version = event.stream_version, sequence = ack.sequence, duplicate = ack.duplicate, "published");
                        self.inner
                            .published
                            .get_or_init(|| {
                                metrics::counter!("annals_relay_published_total", "subscription" => self.inner.name.clone())
                            })
                            .increment(1);
                        chain.last = Some(event.stream_version);
                        chain.next += 1;
                        if filtered || event.position <= high_water {
                            lock(&self.inner.state)
                                .last_on_subject
                                .insert(chain.subject.clone(), event.stream_version);
                        }
                    }
                    Err(e) => {
                        chain.failed = true;
                        failures.push(publish_failure(&e, event));
                    }
                }
            }
        }
    }
}

/// One subject's events of a batch, in order, and how far publishing got.
struct Chain<'a> {
    subject: String,
    events: Vec<&'a RecordedEvent>,
    next: usize,
    last: Option<u64>,
    failed: bool,
}

fn publish_failure(error: &jetstream::context::PublishError, event: &RecordedEvent) -> Failure {
    use std::error::Error as _;
    let code = error
        .source()
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .map(jetstream::Error::error_code);
    let what = format!(
        "publishing {}@{} ({}): {error}",
        event.stream_id, event.stream_version, event.event_id
    );
    match error.kind() {
        PublishErrorKind::MaxPayloadExceeded => Failure::Poison(boxed(format!(
            "{what}: the message is larger than the server's max_payload"
        ))),
        PublishErrorKind::Other if code == Some(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM) => {
            Failure::Poison(boxed(format!(
                "{what}: the message is larger than the stream's max_msg_size"
            )))
        }
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::StreamNotFound
        | PublishErrorKind::MaxAckPending => Failure::Unavailable(boxed(what)),
        _ => Failure::Retry(boxed(what)),
    }
}

/// The most telling of several chains' failures: a broker that is down first (the whole
/// batch waits for it), then an event that can never be published.
fn worst(failures: Vec<Failure>) -> Option<Failure> {
    let rank = |f: &Failure| match f {
        Failure::Unavailable(_) => 0,
        Failure::Poison(_) => 1,
        Failure::Retry(_) => 2,
    };
    failures.into_iter().min_by_key(rank)
}

impl<C: Checkpoints> Subscriber<C> for Relay {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn kind(&self) -> &'static str {
        "relay"
    }

    fn event_types(&self) -> Option<Vec<String>> {
        self.inner.options.event_types.clone()
    }

    fn retry(&self) -> RetryPolicy {
        self.inner.options.retry
    }

    fn on_failure(&self) -> FailurePolicy {
        self.inner.options.policy
    }

    /// Connects (creating or checking the JetStream stream) and learns where the last
    /// batch before this start may have ended.
    /// Credentials, TLS and stream settings the server refuses fail the relay for good
    /// ([`Failure::Poison`]); an unreachable server is retried.
    async fn setup(&self, _tx: &mut C::Tx) -> Result<(), Failure> {
        let connection = self.connection().await.map_err(|e| {
            if e.is_retryable() {
                Failure::Unavailable(boxed(e))
            } else {
                Failure::Poison(boxed(e))
            }
        })?;
        let high_water = self.high_water(&connection.stream).await?;
        let mut state = lock(&self.inner.state);
        state.high_water = state.high_water.max(high_water);
        state.last_on_subject.clear();
        Ok(())
    }

    async fn deliver(&self, events: &[RecordedEvent]) -> Result<(), Failure> {
        let Some(batch_end) = events.last().map(|e| e.position) else {
            return Ok(());
        };
        let span = tracing::info_span!("annals.relay.publish", relay = %self.inner.name, events = events.len());
        async {
            let connection = self
                .connection()
                .await
                .map_err(|e| Failure::Unavailable(boxed(e)))?;
            let mut chains: Vec<Chain<'_>> = Vec::new();
            let mut index: HashMap<String, usize> = HashMap::new();
            for event in events.iter().filter(|e| self.selected(e)) {
                let subject = self
                    .inner
                    .options
                    .subject
                    .subject(&self.inner.options.stream.prefix, event)
                    .map_err(|problem| {
                        Failure::Poison(boxed(format!(
                            "event {} ({}@{}): no subject can be formed: {problem}",
                            event.event_id, event.stream_id, event.stream_version
                        )))
                    })?;
                match index.get(&subject) {
                    Some(&i) => chains[i].events.push(event),
                    None => {
                        index.insert(subject.clone(), chains.len());
                        chains.push(Chain {
                            subject,
                            events: vec![event],
                            next: 0,
                            last: None,
                            failed: false,
                        });
                    }
                }
            }
            let high_water = lock(&self.inner.state).high_water;
            self.learn_last(&connection, &mut chains, high_water)
                .await?;
            let failures = self
                .publish_waves(&connection, &mut chains, batch_end, high_water)
                .await;
            let mut state = lock(&self.inner.state);
            if let Some(failure) = worst(failures) {
                // Part of the batch may be on the bus: until it commits, look before
                // publishing its events again.
                state.high_water = state.high_water.max(batch_end);
                state.last_on_subject.clear();
                return Err(failure);
            }
            let past_uncertainty = events
                .first()
                .is_some_and(|e| e.position > state.high_water);
            if (past_uncertainty && self.inner.options.event_types.is_none())
                || state.last_on_subject.len() > SUBJECT_CACHE
            {
                state.last_on_subject.clear();
            }
            Ok(())
        }
        .instrument(span)
        .await
    }
}
