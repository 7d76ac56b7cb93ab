//! Idempotent appends under faults: an append whose COMMIT reply was lost is run again by the
//! store and answered with its original result (written once), as is a caller's retry; one
//! whose server process was terminated during COMMIT is run again and written once.

mod common;

use std::time::{Duration, Instant};

use annals_core::{
    AppendResult, Error, EventStore, ExpectedVersion, NewEvent, Position, ReadStream, StreamAppend,
};
use annals_store_postgres::{PgEventStore, PgStoreOptions};
use common::{
    backend_where, event, install_slow_commits, proxy::Proxy, slow_commits, TestDatabases,
};
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    Connection, PgConnection,
};

/// The shapes of append a retry must recognise: one event (the scalar statement), several
/// events to one stream (the array statement), several streams (the function).
fn shapes() -> Vec<(&'static str, Vec<StreamAppend>)> {
    vec![
        (
            "one event",
            vec![StreamAppend::new(
                "one",
                ExpectedVersion::Exact(1),
                vec![event(1)],
            )],
        ),
        (
            "one stream",
            vec![StreamAppend::new(
                "many",
                ExpectedVersion::NoStream,
                vec![event(1), event(2), event(3)],
            )],
        ),
        (
            "two streams",
            vec![
                StreamAppend::new("left", ExpectedVersion::Any, vec![event(1)]),
                StreamAppend::new("right", ExpectedVersion::Exact(1), vec![event(2), event(3)]),
            ],
        ),
    ]
}

/// Where the events of `appends` are stored (each once, or the test fails). Read from the
/// table: the log may hold them back while another test's transaction is open.
async fn stored_once(store: &PgEventStore, appends: &[StreamAppend]) -> Vec<(String, u64)> {
    let mut at = Vec::new();
    for e in appends.iter().flat_map(|a| &a.events) {
        let found: Vec<(String, i64)> = sqlx::query_as(
            "SELECT stream_id, stream_version FROM annals.events WHERE event_id = $1",
        )
        .bind(e.event_id)
        .fetch_all(store.pool())
        .await
        .expect("look up");
        assert_eq!(
            found.len(),
            1,
            "event {} is stored {} times",
            e.event_id,
            found.len()
        );
        let (stream, version) = found.into_iter().next().expect("one row");
        at.push((stream, version as u64));
    }
    at
}

async fn seed(store: &PgEventStore) {
    for stream in ["one", "right"] {
        store
            .append_to_stream(stream, ExpectedVersion::NoStream, vec![event(0)])
            .await
            .expect("seed");
    }
}

/// The server commits, the reply never arrives (the proxy swallows it and then cuts the
/// connection): the client sees a backend error, the retry gets the original result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_lost_commit_reply_returns_the_original_result() {
    let dbs = TestDatabases::default();
    let store = dbs.store().await;
    seed(&store).await;
    let options: PgConnectOptions = store.pool().connect_options().as_ref().clone();
    let upstream = tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .expect("resolve")
        .next()
        .expect("an address");
    let reader = PgEventStore::with_options(
        store.pool().clone(),
        PgStoreOptions::new().poll_interval(Duration::from_secs(60)),
    )
    .expect("options");
    for (shape, appends) in shapes() {
        let proxy = Proxy::start(upstream).await;
        // No ping on acquire: its reply would be swallowed before the append is sent.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone().host("127.0.0.1").port(proxy.addr.port()))
            .await
            .expect("pool through the proxy");
        // No NOTIFY: it would take the proxy's one connection from the append.
        // NOTIFY on: another process's reader is woken by it (sent by a background task
        // after the append is answered, when replies flow again).
        let through = PgEventStore::with_options(pool, PgStoreOptions::new()).expect("options");
        // Prepare the statements this shape uses while replies still arrive (the same
        // shape on other streams; refusals are fine), so that once replies are swallowed
        // the append goes straight to execution.
        let warm: Vec<StreamAppend> = appends
            .iter()
            .map(|a| {
                let events = a.events.iter().map(|_| event(0)).collect();
                StreamAppend::new(format!("warm-{}", a.stream_id), a.expected, events)
            })
            .collect();
        let _ = through.append(warm).await;
        through.head().await.expect("warm the connection");
        // The warm-up's NOTIFY, if any, goes out before replies are swallowed; then a reader
        // in another process (its own store, polling only every minute) waits for the append.
        // Its LISTEN connection is up first (connecting wakes waiters once, for what they
        // may have missed), so only a NOTIFY can wake it before its timeout.
        let _ = reader
            .wait_for_events(Position::START, Duration::ZERO)
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // (The head once every committed event is visible, the warm-up's included.)
        let head = annals_store_postgres::testkit::settled_head(&reader).await;
        let waiter = {
            let reader = reader.clone();
            tokio::spawn(async move {
                let woke = reader.wait_for_events(head, Duration::from_secs(5)).await;
                (woke, Instant::now())
            })
        };
        // The pool checks a connection as it takes it back: let that finish first.
        while through.pool().num_idle() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        proxy.swallow_replies();
        let append = {
            let (through, appends) = (through.clone(), appends.clone());
            tokio::spawn(async move { through.append(appends).await })
        };
        // Wait until the server has committed it, then cut the connection.
        let first_id = appends[0].events[0].event_id;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let committed: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM annals.events WHERE event_id = $1)",
            )
            .bind(first_id)
            .fetch_one(store.pool())
            .await
            .expect("look");
            if committed {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{shape}: the append never committed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        proxy.cut_all();
        // The store ran the append again on a fresh connection (appends are idempotent by
        // event id): the caller gets the original result, not the lost connection's error.
        let answered = append
            .await
            .expect("join")
            .unwrap_or_else(|e| panic!("{shape}: the append was not run again: {e}"));
        let answered_at = Instant::now();
        // The lost attempt wrote the events and the store's retry found them stored: the
        // store still NOTIFYs, and the reader wakes long before its next poll.
        let (woke, at) = waiter.await.expect("join");
        assert!(
            woke.expect("wait"),
            "{shape}: the reader never saw the append"
        );
        assert!(
            at < answered_at + Duration::from_secs(2),
            "{shape}: no NOTIFY for an append answered after a lost reply (the reader saw it \
             only at its timeout, {:?} after the answer)",
            at.saturating_duration_since(answered_at)
        );

        // Retries by the caller are answered with the original result too.
        let retried = through.append(appends.clone()).await.expect("retry");
        let again = store.append(appends.clone()).await.expect("second retry");
        assert_eq!(retried, again, "{shape}: two retries disagree");
        assert_eq!(
            answered, retried,
            "{shape}: the store's own retry disagrees"
        );
        let at = stored_once(&store, &appends).await;
        let expected: Vec<(String, u64)> = retried
            .streams
            .iter()
            .zip(&appends)
            .flat_map(|(s, a)| {
                let first = s.version + 1 - a.events.len() as u64;
                (0..a.events.len() as u64).map(move |i| (s.stream_id.clone(), first + i))
            })
            .collect();
        assert_eq!(
            at, expected,
            "{shape}: the retry's result is not where the events are"
        );
        let last = store
            .read_stream(
                &appends.last().expect("a part").stream_id,
                ReadStream::backward_from(u64::MAX).limit(1),
            )
            .await
            .expect("read");
        assert_eq!(
            retried.position, last[0].position,
            "{shape}: position as first recorded"
        );
    }
    dbs.drop_all().await;
}

/// The server process is terminated while it commits (a deferred trigger holds the COMMIT
/// open): nothing is committed, the client sees a backend error, and the retry writes the
/// events once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_server_died_mid_commit_writes_once() {
    let dbs = TestDatabases::default();
    let store = dbs.store().await;
    seed(&store).await;
    // Only the first attempt's COMMIT is held open: slow commits are switched off before
    // the kill, so the store's own retry commits at once.
    install_slow_commits(&store, false).await;
    let mut admin = PgConnection::connect_with(&store.pool().connect_options())
        .await
        .expect("admin");
    for (shape, appends) in shapes() {
        slow_commits(&store, true).await;
        let append = {
            let (store, appends) = (store.clone(), appends.clone());
            tokio::spawn(async move { store.append(appends).await })
        };
        let pid = backend_where(&mut admin, "wait_event = 'PgSleep'").await;
        slow_commits(&store, false).await;
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&mut admin)
            .await
            .expect("terminate");
        // The store ran the append again on another connection: written once.
        let answered = append
            .await
            .expect("join")
            .unwrap_or_else(|e| panic!("{shape}: the append was not run again: {e}"));
        let retried: AppendResult = store.append(appends.clone()).await.expect("retry");
        assert_eq!(
            retried, answered,
            "{shape}: a retry is not answered with the store's own retry's result"
        );
        stored_once(&store, &appends).await;
    }
    let _ = admin.close().await;
    dbs.drop_all().await;
}

/// What the retry promise does not cover is refused: the same ids with different content
/// in the same places are a repeat (ids identify events); a retry under a new id is a new
/// event. Both behaviours are documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_recognised_by_event_ids_only() {
    let dbs = TestDatabases::default();
    let store = dbs.store().await;
    let original = event(1);
    let first = store
        .append_to_stream("ids", ExpectedVersion::NoStream, vec![original.clone()])
        .await
        .expect("append");
    let same_id_other_payload = NewEvent {
        payload: br#"{"n":999}"#.to_vec(),
        ..original.clone()
    };
    let again = store
        .append_to_stream(
            "ids",
            ExpectedVersion::NoStream,
            vec![same_id_other_payload],
        )
        .await
        .expect("a repeat by id");
    assert_eq!(again, first);
    let stored = store
        .read_stream("ids", ReadStream::all())
        .await
        .expect("read");
    assert_eq!(stored.len(), 1);
    let json = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).expect("json");
    assert_eq!(
        json(&stored[0].payload),
        json(&original.payload),
        "the stored event changed"
    );
    let new_id = store
        .append_to_stream("ids", ExpectedVersion::NoStream, vec![event(1)])
        .await;
    assert!(new_id.as_ref().is_err_and(Error::is_conflict), "{new_id:?}");
    dbs.drop_all().await;
}
