//! Appends inside the caller's transaction (the transactional outbox): the events commit or
//! roll back with the caller's writes, keep optimistic concurrency and idempotence, wake
//! tailing readers when the transaction commits, and never reorder a stream, even when the
//! transaction wrote something before appending.

mod common;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use annals_core::{
    Error, EventStore, ExpectedVersion, Position, ReadAll, ReadStream, RecordedEvent, StreamAppend,
};
use annals_store_postgres::{PgEventStore, PgStoreOptions};
use common::{event, TestDatabases};
use sqlx::Executor;

fn one(stream: &str, expected: ExpectedVersion) -> Vec<StreamAppend> {
    vec![StreamAppend::new(stream, expected, vec![event(1)])]
}

async fn with_orders(store: &PgEventStore) {
    store
        .pool()
        .execute(
            "CREATE TABLE public.orders (id bigint PRIMARY KEY, state text NOT NULL);
             INSERT INTO public.orders VALUES (1, 'new'), (2, 'new')",
        )
        .await
        .expect("orders table");
}

async fn order_state(store: &PgEventStore, id: i64) -> String {
    sqlx::query_scalar("SELECT state FROM public.orders WHERE id = $1")
        .bind(id)
        .fetch_one(store.pool())
        .await
        .expect("order")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_s_writes_and_the_events_commit_or_roll_back_together() {
    let dbs = TestDatabases::default();
    let store = dbs.store().await;
    with_orders(&store).await;

    let mut tx = store.pool().begin().await.expect("begin");
    sqlx::query("UPDATE public.orders SET state = 'paid' WHERE id = 1")
        .execute(&mut *tx)
        .await
        .expect("update");
    store
        .append_in(&mut tx, one("order-1", ExpectedVersion::NoStream))
        .await
        .expect("append in the transaction");
    tx.rollback().await.expect("rollback");
    assert_eq!(order_state(&store, 1).await, "new");
    assert_eq!(store.stream_version("order-1").await.expect("version"), 0);

    let mut tx = store.pool().begin().await.expect("begin");
    sqlx::query("UPDATE public.orders SET state = 'paid' WHERE id = 1")
        .execute(&mut *tx)
        .await
        .expect("update");
    let appended = store
        .append_in(&mut tx, one("order-1", ExpectedVersion::NoStream))
        .await
        .expect("append in the transaction");
    // Not visible to anyone else before the commit.
    assert_eq!(store.stream_version("order-1").await.expect("version"), 0);
    tx.commit().await.expect("commit");
    assert_eq!(order_state(&store, 1).await, "paid");
    let events = store
        .read_stream("order-1", ReadStream::all())
        .await
        .expect("read");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].position, appended.position);
    dbs.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_in_a_transaction_keep_conflicts_and_repeats() {
    let dbs = TestDatabases::default();
    let store = dbs.store().await;
    store
        .append_to_stream("s", ExpectedVersion::NoStream, vec![event(0)])
        .await
        .expect("seed");

    // A conflict is typed.
    let mut tx = store.pool().begin().await.expect("begin");
    let refused = store
        .append_in(&mut tx, one("s", ExpectedVersion::Exact(5)))
        .await;
    assert!(
        matches!(refused, Err(Error::Conflict { actual: 1, .. })),
        "{refused:?}"
    );
    tx.rollback().await.expect("rollback");

    // The same append twice in one transaction, then again after it committed: one write,
    // the original result every time, for one event, several, and several streams.
    let shapes = [
        one("s", ExpectedVersion::Exact(1)),
        vec![StreamAppend::new(
            "t",
            ExpectedVersion::NoStream,
            vec![event(1), event(2)],
        )],
        vec![
            StreamAppend::new("u", ExpectedVersion::Any, vec![event(1)]),
            StreamAppend::new("v", ExpectedVersion::Any, vec![event(2), event(3)]),
        ],
    ];
    for appends in shapes {
        let mut tx = store.pool().begin().await.expect("begin");
        let first = store
            .append_in(&mut tx, appends.clone())
            .await
            .expect("append");
        let again = store
            .append_in(&mut tx, appends.clone())
            .await
            .expect("the same append in the same transaction");
        assert_eq!(again, first);
        tx.commit().await.expect("commit");
        let mut tx = store.pool().begin().await.expect("begin");
        let after = store
            .append_in(&mut tx, appends.clone())
            .await
            .expect("the same append after commit");
        assert_eq!(after, first);
        tx.commit().await.expect("commit");
        for append in &appends {
            let stored = store
                .read_stream(&append.stream_id, ReadStream::all())
                .await
                .expect("read");
            for e in &append.events {
                assert_eq!(
                    stored.iter().filter(|r| r.event_id == e.event_id).count(),
                    1,
                    "an event of a repeated append was written twice"
                );
            }
        }
    }
    dbs.drop_all().await;
}

/// A transaction that wrote before appending already has its transaction id. If a younger
/// transaction wrote the stream meanwhile, appending would list this transaction's events
/// before that stream's earlier versions: it is refused, and succeeds when retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_transaction_is_refused_rather_than_reordering_a_stream() {
    let dbs = TestDatabases::default();
    let store = dbs.store().await;
    with_orders(&store).await;
    store
        .append_to_stream("s", ExpectedVersion::NoStream, vec![event(0)])
        .await
        .expect("seed s");
    store
        .append_to_stream("quiet", ExpectedVersion::NoStream, vec![event(0)])
        .await
        .expect("seed quiet");

    for shape in ["single", "multi"] {
        let mut older = store.pool().begin().await.expect("begin");
        sqlx::query("UPDATE public.orders SET state = 'paid' WHERE id = 2")
            .execute(&mut *older)
            .await
            .expect("an earlier write takes the transaction id");
        // A younger transaction writes s and commits.
        store
            .append_to_stream("s", ExpectedVersion::Any, vec![event(9)])
            .await
            .expect("younger append");
        let appends = match shape {
            "single" => one("s", ExpectedVersion::Any),
            _ => vec![
                StreamAppend::new("quiet", ExpectedVersion::Any, vec![event(1)]),
                StreamAppend::new("s", ExpectedVersion::Any, vec![event(1)]),
            ],
        };
        let refused = store.append_in(&mut older, appends.clone()).await;
        assert!(
            matches!(&refused, Err(Error::StaleTransaction { stream_id }) if stream_id == "s"),
            "{shape}: {refused:?}"
        );
        assert!(refused.as_ref().is_err_and(Error::is_retryable));
        older.rollback().await.expect("rollback");

        // Retried in a fresh transaction, it goes through.
        let mut retry = store.pool().begin().await.expect("begin");
        sqlx::query("UPDATE public.orders SET state = 'paid' WHERE id = 2")
            .execute(&mut *retry)
            .await
            .expect("write again");
        store
            .append_in(&mut retry, appends)
            .await
            .expect("the retried transaction appends");
        retry.commit().await.expect("commit");
    }

    // An older transaction appending to a stream nobody wrote since it began is fine.
    let mut older = store.pool().begin().await.expect("begin");
    sqlx::query("UPDATE public.orders SET state = 'shipped' WHERE id = 2")
        .execute(&mut *older)
        .await
        .expect("write");
    store
        .append_to_stream("other", ExpectedVersion::Any, vec![event(1)])
        .await
        .expect("someone appends elsewhere");
    store
        .append_in(&mut older, one("s", ExpectedVersion::Any))
        .await
        .expect("nobody wrote s since");
    older.commit().await.expect("commit");
    dbs.drop_all().await;
}

/// A tailing reader in another process wakes when an outbox transaction commits (the
/// NOTIFY is part of the transaction), long before its poll interval; a rolled-back one
/// shows it nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tailing_reader_wakes_when_the_outbox_transaction_commits() {
    let dbs = TestDatabases::default();
    let store = dbs.store().await;
    // The reader's own store: another pool, polling only every 30 s.
    let reader = PgEventStore::with_options(
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_with(store.pool().connect_options().as_ref().clone())
            .await
            .expect("reader pool"),
        PgStoreOptions::new().poll_interval(Duration::from_secs(30)),
    )
    .expect("options");
    let head = reader.head().await.expect("head");

    let mut rolled_back = store.pool().begin().await.expect("begin");
    store
        .append_in(&mut rolled_back, one("ghost", ExpectedVersion::Any))
        .await
        .expect("append");
    rolled_back.rollback().await.expect("rollback");

    let waiter = {
        let reader = reader.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let woke = reader
                .wait_for_events(head, Duration::from_secs(20))
                .await
                .expect("wait");
            (woke, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut tx = store.pool().begin().await.expect("begin");
    store
        .append_in(&mut tx, one("real", ExpectedVersion::Any))
        .await
        .expect("append");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the reader woke before the commit");
    tx.commit().await.expect("commit");
    let (woke, waited) = waiter.await.expect("join");
    assert!(woke, "the reader never saw the committed append");
    assert!(
        waited < Duration::from_secs(5),
        "woke after {waited:?}: by polling, not by the transaction's NOTIFY"
    );
    let all = reader.read_all(ReadAll::after(head)).await.expect("read");
    let streams: Vec<&str> = all.iter().map(|e| e.stream_id.as_str()).collect();
    assert_eq!(streams, ["real"]);
    dbs.drop_all().await;
}

/// Writers mixing outbox transactions (which write a row first, so they hold a transaction
/// id before they append) with plain appends on shared streams, and a tailing reader: every
/// committed event seen once, every stream in order; refused transactions retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_transactions_and_plain_appends_keep_every_stream_in_order() {
    let dbs = TestDatabases::default();
    let store = dbs.store().await;
    with_orders(&store).await;
    let streams: Vec<String> = (0..4).map(|i| format!("shared-{i}")).collect();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen: Vec<RecordedEvent> = Vec::new();
            let mut after = Position::START;
            let mut quiet_after_done = 0;
            loop {
                let page = store
                    .read_all(ReadAll::after(after).limit(50))
                    .await
                    .expect("read");
                if let Some(last) = page.last() {
                    after = last.position;
                    seen.extend(page);
                    continue;
                }
                if done.load(Ordering::SeqCst) {
                    quiet_after_done += 1;
                    if quiet_after_done > 20 {
                        return seen;
                    }
                }
                store
                    .wait_for_events(after, Duration::from_millis(50))
                    .await
                    .expect("wait");
            }
        })
    };
    let mut writers = Vec::new();
    for w in 0..6 {
        let (store, streams) = (store.clone(), streams.clone());
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut stale = 0;
            for i in 0..40 {
                let stream = &streams[(w + i) % streams.len()];
                let appends = if i % 3 == 0 {
                    vec![
                        StreamAppend::new(stream.as_str(), ExpectedVersion::Any, vec![event(1)]),
                        StreamAppend::new(
                            streams[(w + i + 1) % streams.len()].as_str(),
                            ExpectedVersion::Any,
                            vec![event(2)],
                        ),
                    ]
                } else {
                    one(stream, ExpectedVersion::Any)
                };
                let ids: Vec<uuid::Uuid> = appends
                    .iter()
                    .flat_map(|a| a.events.iter().map(|e| e.event_id))
                    .collect();
                if w % 2 == 0 {
                    store.append(appends).await.expect("plain append");
                } else {
                    loop {
                        let mut tx = store.pool().begin().await.expect("begin");
                        sqlx::query("UPDATE public.orders SET state = state WHERE id = 1")
                            .execute(&mut *tx)
                            .await
                            .expect("the outbox write");
                        tokio::task::yield_now().await;
                        match store.append_in(&mut tx, appends.clone()).await {
                            Ok(_) => {
                                tx.commit().await.expect("commit");
                                break;
                            }
                            Err(Error::StaleTransaction { .. }) => {
                                stale += 1;
                                tx.rollback().await.expect("rollback");
                            }
                            Err(e) => panic!("writer {w}: {e}"),
                        }
                    }
                }
                acked.extend(ids);
            }
            (acked, stale)
        }));
    }
    let mut acked = Vec::new();
    let mut stale = 0;
    for writer in writers {
        let (a, s) = writer.await.expect("writer");
        acked.extend(a);
        stale += s;
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.expect("reader");
    let mut counts: HashMap<uuid::Uuid, usize> = HashMap::new();
    for e in &seen {
        *counts.entry(e.event_id).or_default() += 1;
    }
    assert!(counts.values().all(|&n| n == 1), "an event was seen twice");
    let missing = acked.iter().filter(|id| !counts.contains_key(id)).count();
    assert_eq!(missing, 0, "committed events never seen");
    assert_eq!(seen.len(), acked.len(), "events seen that nobody committed");
    let mut next: HashMap<&str, u64> = HashMap::new();
    for e in &seen {
        let expected = next.entry(&e.stream_id).or_insert(1);
        assert_eq!(
            e.stream_version, *expected,
            "{} out of order in the global log",
            e.stream_id
        );
        *expected += 1;
    }
    println!("{} events, {stale} stale transactions retried", seen.len());
    dbs.drop_all().await;
}
