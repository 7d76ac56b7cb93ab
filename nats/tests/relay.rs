//! The relay against a real JetStream server (its own per test) and a real PostgreSQL log:
//! one message per event with the whole envelope, per-subject order, and the stream set up
//! or refused.

mod common;

use std::time::Duration;

use annals_core::{EventStore, ExpectedVersion, StreamAppend};
use annals_nats::{headers, Error, Relay, RelayOptions, StreamSettings};
use annals_projections::{PgCheckpoints, ProjectionEngine};
use annals_store_postgres::testkit::{settled_head, TestDatabase};
use common::{append, assert_exactly_once_in_order, bus, fast, noted, relay_until, NatsServer};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_published_once_with_its_envelope_in_stream_order() {
    let nats = NatsServer::start().await;
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let (mut ids, _) = append(&store, "account", 7, 120).await;
    // A multi-stream append and an event with metadata, a binary payload, an odd stream id.
    let mut binary =
        annals_core::NewEvent::new("noted", 1, annals_core::Encoding::Postcard, vec![0, 255, 7]);
    binary.metadata.actor = Some("ada\n(admin)".into());
    binary.metadata.correlation_id = Some(uuid::Uuid::now_v7());
    ids.push(binary.event_id);
    let multi = [noted(1), noted(2)];
    ids.extend(multi.iter().map(|e| e.event_id));
    store
        .append(vec![
            StreamAppend::new(
                "account-x.y z",
                ExpectedVersion::NoStream,
                vec![binary.clone()],
            ),
            StreamAppend::new("order-1", ExpectedVersion::Any, multi.to_vec()),
        ])
        .await
        .expect("append");
    let (more, head) = append(&store, "account", 3, 30).await;
    ids.extend(more);

    let relay = Relay::new("relay", nats.options(), RelayOptions::new());
    relay.connect().await.expect("connect");
    let running = ProjectionEngine::new(store.clone(), PgCheckpoints::new(&store))
        .with_options(fast())
        .subscribe(relay)
        .start();
    running
        .wait_until_caught_up(head, WAIT)
        .await
        .expect("caught up");
    let status = running.status().await.expect("status");
    assert_eq!((status[0].kind, status[0].lag), ("relay", 0));
    running.shutdown().await;

    let on_bus = bus(&nats.options(), "ANNALS").await;
    assert_exactly_once_in_order(&on_bus, &ids);
    // The envelope survives, and the subject is the stream's.
    let odd = on_bus
        .iter()
        .find(|m| m.event.event_id == binary.event_id)
        .expect("the binary event");
    assert_eq!(odd.subject, "annals.account.account-x%2Ey%20z");
    assert_eq!(odd.event.stream_id, "account-x.y z");
    assert_eq!(odd.event.payload, [0, 255, 7]);
    assert_eq!(odd.event.metadata, binary.metadata);
    let stored = store
        .read_stream("account-x.y z", annals_core::ReadStream::all())
        .await
        .expect("read");
    assert_eq!(odd.event.position, stored[0].position);
    for name in [
        "Nats-Msg-Id",
        headers::CE_SPECVERSION,
        headers::CE_ID,
        headers::CE_SOURCE,
        headers::CE_TYPE,
        headers::CE_TIME,
        headers::CE_SUBJECT,
        headers::CE_DATACONTENTTYPE,
        headers::STREAM_VERSION,
        headers::POSITION,
        headers::RELAY,
    ] {
        assert!(odd.headers.get(name).is_some(), "header {name} missing");
    }
    assert_eq!(
        odd.headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned()),
        Some(binary.event_id.to_string())
    );
    assert_eq!(
        odd.headers
            .get(headers::CE_SOURCE)
            .map(|v| v.as_str().to_owned()),
        Some("annals://relay".to_owned())
    );
    // The schema version and where its schema is, for consumers in other languages.
    assert_eq!(
        odd.headers
            .get(headers::SCHEMA_VERSION)
            .map(|v| v.as_str().to_owned()),
        Some(stored[0].schema_version.to_string())
    );
    assert_eq!(
        odd.headers
            .get(headers::CE_DATASCHEMA)
            .map(|v| v.as_str().to_owned()),
        Some(format!(
            "annals://relay/schemas/{}/{}",
            stored[0].event_type, stored[0].schema_version
        ))
    );
    db.drop_database().await;
}

/// With an event-type filter, each message carries the version of the previous message on
/// its subject, so a consumer can still check order across the events left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_filtered_relay_links_each_message_to_the_previous_one_on_its_subject() {
    let nats = NatsServer::start().await;
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let skipped = || {
        annals_core::encode_event(&common::Ev::Skipped, annals_core::Encoding::Json)
            .expect("encode")
    };
    // account-1: noted, skipped, skipped, noted, skipped, noted
    for event in [
        noted(1),
        skipped(),
        skipped(),
        noted(2),
        skipped(),
        noted(3),
    ] {
        store
            .append_to_stream("account-1", ExpectedVersion::Any, vec![event])
            .await
            .expect("append");
    }
    let relay = Relay::new(
        "filtered",
        nats.options(),
        RelayOptions::new().event_types(["noted"]),
    );
    let engine = ProjectionEngine::new(store.clone(), PgCheckpoints::new(&store))
        .with_options(fast().batch_size(1))
        .subscribe(relay);
    let running = engine.start();
    let head = settled_head(&store).await;
    running
        .wait_until_caught_up(head, WAIT)
        .await
        .expect("caught up");
    running.shutdown().await;
    // Restarted, it still knows the previous message on the subject.
    store
        .append_to_stream("account-1", ExpectedVersion::Any, vec![skipped(), noted(4)])
        .await
        .expect("append");
    let running = engine.start();
    let head = settled_head(&store).await;
    running
        .wait_until_caught_up(head, WAIT)
        .await
        .expect("caught up");
    running.shutdown().await;
    let on_bus = bus(&nats.options(), "ANNALS").await;
    let links: Vec<(u64, u64)> = on_bus
        .iter()
        .map(|m| (m.event.stream_version, m.previous_version))
        .collect();
    assert_eq!(links, [(1, 0), (4, 1), (6, 4), (8, 6)]);
    db.drop_database().await;
}

/// Only the chosen categories are published; the checkpoint still moves past the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_chosen_categories_are_published() {
    let nats = NatsServer::start().await;
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let (accounts, _) = append(&store, "account", 3, 20).await;
    let (_, head) = append(&store, "audit", 2, 20).await;
    let relay = Relay::new(
        "accounts",
        nats.options(),
        RelayOptions::new().categories(["account"]),
    );
    relay_until(&store, relay, head).await;
    assert_exactly_once_in_order(&bus(&nats.options(), "ANNALS").await, &accounts);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_cannot_hold_the_relay_s_messages_is_refused_clearly() {
    let nats = NatsServer::start().await;
    let client = nats.options().connect().await.expect("connect");
    let js = annals_nats::async_nats::jetstream::new(client);
    js.create_stream(annals_nats::async_nats::jetstream::stream::Config {
        name: "OTHER".into(),
        subjects: vec!["other.>".into()],
        ..Default::default()
    })
    .await
    .expect("a stream of someone else's");
    js.create_stream(annals_nats::async_nats::jetstream::stream::Config {
        name: "QUEUE".into(),
        subjects: vec!["queue.>".into()],
        retention: annals_nats::async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
        ..Default::default()
    })
    .await
    .expect("a work queue");
    let relay = |name: &str, prefix: &str| {
        Relay::new(
            "r",
            nats.options(),
            RelayOptions::new().stream(StreamSettings {
                name: name.to_owned(),
                prefix: prefix.to_owned(),
                ..StreamSettings::default()
            }),
        )
    };
    let wrong_subjects = relay("OTHER", "annals").connect().await;
    assert!(
        matches!(&wrong_subjects, Err(Error::Stream { problem, .. }) if problem.contains("other.>")),
        "{wrong_subjects:?}"
    );
    let work_queue = relay("QUEUE", "queue").connect().await;
    assert!(
        matches!(&work_queue, Err(Error::Stream { problem, .. }) if problem.contains("retention")),
        "{work_queue:?}"
    );
    relay("FINE", "fine")
        .connect()
        .await
        .expect("a stream annals creates");
    relay("FINE", "fine")
        .connect()
        .await
        .expect("and finds again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_or_one_without_jetstream_is_a_clear_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let nobody = Relay::new(
        "r",
        annals_nats::NatsOptions::new(format!("nats://user:hunter2@127.0.0.1:{port}"))
            .connect_timeout(Duration::from_secs(2)),
        RelayOptions::new(),
    );
    let err = nobody.connect().await.expect_err("nobody listens");
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&port.to_string()), "{message}");
    assert!(
        !message.contains("hunter2"),
        "the password leaked: {message}"
    );
    assert!(
        !format!("{err:?}").contains("hunter2"),
        "the password leaked: {err:?}"
    );

    // A server without JetStream.
    let mut plain = std::process::Command::new(common::nats_server_bin())
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nats-server");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "no server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let no_js = Relay::new(
        "r",
        annals_nats::NatsOptions::new(format!("nats://127.0.0.1:{port}"))
            .request_timeout(Duration::from_secs(2)),
        RelayOptions::new(),
    )
    .connect()
    .await;
    let _ = plain.kill();
    let _ = plain.wait();
    assert!(
        matches!(no_js, Err(Error::JetStreamUnavailable { .. })),
        "{no_js:?}"
    );
}
