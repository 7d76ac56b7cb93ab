//! One trace follows a command across every hop (annals-core feature `otel`, exported to an
//! in-memory OpenTelemetry exporter): the command's span, its append, the projection's batch
//! (continued from the event's recorded trace context), the relay's batch and publish
//! (whose context travels in the message headers), and the inbox consumer's handler in the
//! other service.

mod common;

use std::time::{Duration, Instant};

use annals_core::{Aggregate, Repository};
use annals_nats::{InboxConsumer, InboxOptions, Relay, RelayOptions};
use annals_projections::{HandlerError, PgCheckpoints, PgTx, Projection, ProjectionEngine};
use annals_store_postgres::testkit::TestDatabase;
use common::{fast, Ev, NatsServer};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

/// A command that notes a number.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Notes;

impl Aggregate for Notes {
    const TYPE: &'static str = "notes";
    type Command = u64;
    type Event = Ev;
    type Error = std::convert::Infallible;

    fn handle(&self, n: u64) -> Result<Vec<Ev>, Self::Error> {
        Ok(vec![Ev::Noted { n }])
    }

    fn apply(&mut self, _: &Ev) {}
}

/// Counts what it handles, in a table of its own.
#[derive(Clone)]
struct Count(&'static str);

impl Projection<PgCheckpoints> for Count {
    type Event = Ev;

    fn name(&self) -> &str {
        self.0
    }

    async fn setup(&self, tx: &mut PgTx) -> Result<(), HandlerError> {
        let table = format!("CREATE TABLE IF NOT EXISTS {} (n bigint)", self.0);
        sqlx::query(&table).execute(&mut **tx).await?;
        Ok(())
    }

    async fn handle(
        &self,
        event: &annals_core::Envelope<Ev>,
        tx: &mut PgTx,
    ) -> Result<(), HandlerError> {
        let Ev::Noted { n } = event.payload else {
            return Ok(());
        };
        sqlx::query(&format!("INSERT INTO {} VALUES ($1)", self.0))
            .bind(n as i64)
            .execute(&mut **tx)
            .instrument(tracing::info_span!("handler", projection = self.0))
            .await?;
        Ok(())
    }
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_a_command_to_the_consumer_in_another_service() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("annals-test")));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let nats = NatsServer::start().await;
    let db = TestDatabase::new().await;
    let store = db.store().clone();

    // The request: a command, in a span of its own.
    let request = tracing::info_span!("request");
    Repository::<Notes, _>::new(store.clone())
        .execute("a", 7)
        .instrument(request.clone())
        .await
        .expect("command");
    drop(request);

    // The projection and the relay in this service, the consumer in "another" one.
    let running = ProjectionEngine::new(store.clone(), PgCheckpoints::new(&store))
        .with_options(fast())
        .register(Count("counted"))
        .subscribe(Relay::new("relay", nats.options(), RelayOptions::new()))
        .consume(InboxConsumer::new(
            "inbox",
            nats.options(),
            InboxOptions::new(),
            Count("consumed"),
        ))
        .start();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let consumed: i64 = sqlx::query_scalar("SELECT count(*) FROM consumed")
            .fetch_one(store.pool())
            .await
            .unwrap_or(0);
        if consumed == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the consumer never handled the event"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.shutdown().await;
    provider.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("spans");

    let root = named(&spans, "request");
    assert_eq!(
        root.len(),
        1,
        "{:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let trace = root[0].span_context.trace_id();
    let in_trace = |name: &str| {
        named(&spans, name)
            .into_iter()
            .filter(|s| s.span_context.trace_id() == trace)
            .count()
    };
    for (name, at_least) in [
        ("annals.execute", 1),
        ("annals.append", 1),
        // The projection's and the relay's batches.
        ("annals.batch", 2),
        ("annals.publish", 1),
        ("annals.inbox.handle", 1),
        // Both handlers: the projection's here, the consumer's there.
        ("handler", 2),
    ] {
        assert!(
            in_trace(name) >= at_least,
            "{name}: {} in the request's trace, expected {at_least}; all spans: {:?}",
            in_trace(name),
            spans
                .iter()
                .map(|s| (s.name.to_string(), s.span_context.trace_id() == trace))
                .collect::<Vec<_>>()
        );
    }
    // Causality, not only one trace: the projection's batch follows the append that
    // recorded the event, the consumer follows the publish.
    let append = named(&spans, "annals.append")[0].span_context.span_id();
    assert!(
        named(&spans, "annals.batch")
            .iter()
            .any(|b| b.parent_span_id == append),
        "no batch is a child of the append"
    );
    let publish = named(&spans, "annals.publish")[0].span_context.span_id();
    assert_eq!(
        named(&spans, "annals.inbox.handle")[0].parent_span_id,
        publish,
        "the consumer does not continue from the publish"
    );
    db.drop_database().await;
}
