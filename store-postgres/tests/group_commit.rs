//! Group commit: concurrent appends share one transaction and still each get the outcome
//! some serial order of them would give; a group whose commit is lost is retried without
//! losing or doubling an append.
//!
//! `ANNALS_GROUP_ROUNDS` runs the property test longer (default 3 rounds).

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use annals_core::{AppendResult, Error, EventStore, ExpectedVersion, NewEvent, StreamAppend};
use annals_store_postgres::{OutcomeUnknown, PgEventStore, PgStoreOptions};
use common::{
    backend_where, event, install_slow_commits, kill_sessions, proxy::Proxy, slow_commits,
    TestDatabases,
};
use sqlx::{postgres::PgPoolOptions, Connection, Executor, PgConnection};
use uuid::Uuid;

/// A tiny deterministic generator (xorshift), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One call: what was asked, when, and what it answered.
struct Call {
    append: StreamAppend,
    start: Instant,
    end: Instant,
    outcome: Result<AppendResult, Error>,
}

impl Call {
    fn first_id(&self) -> Uuid {
        self.append.events[0].event_id
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_grouped_appends_match_a_serial_order() {
    let rounds: u64 = std::env::var("ANNALS_GROUP_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let dbs = TestDatabases::default();
    // Every append grouped; and grouped only above 8 in flight, so that grouped and
    // ordinary appends race on the same streams.
    for above in [0, 8] {
        let store = dbs
            .store_with(
                PgStoreOptions::new()
                    .group_commit(true)
                    .group_commit_above(above)
                    .notify(false),
            )
            .await;
        for round in 0..rounds {
            let calls = run_round(&store, round).await;
            check_serial(&store, round, &calls).await;
        }
    }
    dbs.drop_all().await;
}

/// 48 tasks, 12 appends each, on 5 streams, with expectations that are often right, often
/// stale, sometimes "any"/"no stream"/"exists", and one append in ten sent again.
async fn run_round(store: &PgEventStore, round: u64) -> Vec<Call> {
    let known: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for task in 0..48u64 {
        let (store, known) = (store.clone(), Arc::clone(&known));
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (round << 32 | task) | 1);
            let mut calls: Vec<Call> = Vec::new();
            for _ in 0..12 {
                let append = if !calls.is_empty() && rng.below(10) == 0 {
                    let again = rng.below(calls.len() as u64) as usize;
                    calls[again].append.clone()
                } else {
                    let stream = format!("r{round}-s{}", rng.below(5));
                    let guess = known.lock().expect("lock").get(&stream).copied();
                    let expected = match rng.below(20) {
                        0..=4 => ExpectedVersion::Any,
                        5..=6 => ExpectedVersion::NoStream,
                        7..=8 => ExpectedVersion::StreamExists,
                        9 => ExpectedVersion::Exact(guess.unwrap_or(0) + 1),
                        _ => ExpectedVersion::Exact(guess.unwrap_or(0)),
                    };
                    let events: Vec<NewEvent> =
                        (0..=rng.below(3)).map(|n| event(task * 100 + n)).collect();
                    StreamAppend::new(stream, expected, events)
                };
                let start = Instant::now();
                let outcome = store.append(vec![append.clone()]).await;
                let end = Instant::now();
                let seen = match &outcome {
                    Ok(result) => Some(result.version()),
                    Err(Error::Conflict { actual, .. }) => Some(*actual),
                    Err(_) => None,
                };
                if let Some(version) = seen {
                    known
                        .lock()
                        .expect("lock")
                        .insert(append.stream_id.clone(), version);
                }
                calls.push(Call {
                    append,
                    start,
                    end,
                    outcome,
                });
                if rng.below(4) == 0 {
                    tokio::task::yield_now().await;
                }
            }
            calls
        }));
    }
    let mut calls = Vec::new();
    for task in tasks {
        calls.extend(task.await.expect("task"));
    }
    calls
}

/// A write in the serial order: the call that stored these events.
struct Write<'a> {
    call: &'a Call,
    result: &'a AppendResult,
}

async fn check_serial(store: &PgEventStore, round: u64, calls: &[Call]) {
    // Every answer is a result or a conflict; repeats agree with the original.
    let mut by_events: HashMap<Uuid, &AppendResult> = HashMap::new();
    for call in calls {
        match &call.outcome {
            Ok(result) => {
                let first = by_events.entry(call.first_id()).or_insert(result);
                assert_eq!(
                    *first, result,
                    "round {round}: two answers for one append of {}",
                    call.append.stream_id
                );
            }
            Err(Error::Conflict { .. }) => {}
            Err(e) => panic!("round {round}: unexpected error {e}"),
        }
    }
    // The writes, in log order; each stored exactly where its answer says.
    let mut writes: Vec<Write<'_>> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for call in calls {
        if let Ok(result) = &call.outcome {
            if seen.insert(call.first_id()) {
                writes.push(Write { call, result });
            }
        }
    }
    writes.sort_by_key(|w| w.result.position);
    let commits: std::collections::HashSet<u64> =
        writes.iter().map(|w| w.result.position.commit()).collect();
    assert!(
        commits.len() < writes.len(),
        "round {round}: {} writes in {} commits: nothing was grouped",
        writes.len(),
        commits.len()
    );
    let mut per_commit: HashMap<(u64, &str), usize> = HashMap::new();
    for w in &writes {
        *per_commit
            .entry((w.result.position.commit(), w.call.append.stream_id.as_str()))
            .or_default() += 1;
    }
    assert!(
        per_commit.values().any(|n| *n > 1),
        "round {round}: no group chained two appends to one stream"
    );
    let all_ids: Vec<Uuid> = calls
        .iter()
        .flat_map(|c| c.append.events.iter().map(|e| e.event_id))
        .collect();
    let stored: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "SELECT event_id, stream_id, stream_version FROM annals.events
         WHERE event_id = ANY ($1) ORDER BY transaction_id, global_position",
    )
    .bind(&all_ids)
    .fetch_all(store.pool())
    .await
    .expect("stored events");
    let stored_at: HashMap<Uuid, (String, u64)> = stored
        .iter()
        .map(|(id, s, v)| (*id, (s.clone(), *v as u64)))
        .collect();
    let expected_count: usize = writes.iter().map(|w| w.call.append.events.len()).sum();
    assert_eq!(
        stored.len(),
        expected_count,
        "round {round}: stored events are not exactly the successful appends' events"
    );
    // The log lists each stream's events in version order.
    let mut last: HashMap<&str, i64> = HashMap::new();
    for (_, stream, version) in &stored {
        let before = last.insert(stream, *version).unwrap_or(0);
        assert_eq!(
            *version,
            before + 1,
            "round {round}: log out of order on {stream}"
        );
    }

    // Replay the writes serially per stream: each expectation held, versions chain, and
    // the events sit where the answer says.
    let mut history: BTreeMap<&str, Vec<(u64, &Write<'_>)>> = BTreeMap::new();
    for write in &writes {
        let append = &write.call.append;
        let states = history.entry(&append.stream_id).or_default();
        let before = states.last().map_or(0, |(v, _)| *v);
        assert!(
            append.expected.matches(before),
            "round {round}: {} written at version {before} though it expected {:?}",
            append.stream_id,
            append.expected
        );
        let after = write.result.version();
        assert_eq!(
            after,
            before + append.events.len() as u64,
            "round {round}: versions do not chain"
        );
        for (i, e) in append.events.iter().enumerate() {
            assert_eq!(
                stored_at.get(&e.event_id),
                Some(&(append.stream_id.clone(), before + 1 + i as u64)),
                "round {round}: an event is not where its answer says"
            );
        }
        // Real time: a write cannot come after one that started after it ended.
        if let Some((_, previous)) = states.last() {
            assert!(
                write.call.end > previous.call.start,
                "round {round}: the serial order contradicts real time"
            );
        }
        states.push((after, write));
    }

    // Each conflict saw a version its stream had during the call, which refused it.
    for call in calls {
        let Err(Error::Conflict { actual, .. }) = &call.outcome else {
            continue;
        };
        assert!(
            !call.append.expected.matches(*actual),
            "round {round}: conflict at {actual} though {:?} matches it",
            call.append.expected
        );
        let states = history.get(call.append.stream_id.as_str());
        let states: &[(u64, &Write<'_>)] = states.map_or(&[], Vec::as_slice);
        // Version `actual` held from the write that made it until the next write.
        let made = states.iter().position(|(v, _)| v == actual);
        let (began, ended) = match (actual, made) {
            (0, _) => (None, states.first().map(|(_, w)| w)),
            (_, Some(i)) => (Some(states[i].1), states.get(i + 1).map(|(_, w)| w)),
            (_, None) => panic!(
                "round {round}: conflict reports version {actual} of {}, which it never had",
                call.append.stream_id
            ),
        };
        let possible = began.is_none_or(|w| w.call.start < call.end)
            && ended.is_none_or(|w| w.call.end > call.start);
        assert!(
            possible,
            "round {round}: conflict at version {actual} of {} outside the call's time",
            call.append.stream_id
        );
    }
}

/// Below the threshold appends take the ordinary path (each its own commit); above it they
/// share commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_grouped_only_above_the_threshold() {
    let dbs = TestDatabases::default();
    for (above, tasks, grouped) in [(16, 4, false), (2, 24, true)] {
        let store = dbs
            .store_with(
                PgStoreOptions::new()
                    .notify(false)
                    .group_commit(true)
                    .group_commit_above(above),
            )
            .await;
        let mut handles = Vec::new();
        for task in 0..tasks {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                let mut commits = Vec::new();
                for n in 0..20 {
                    let done = store
                        .append_to_stream(
                            &format!("t-{task}"),
                            ExpectedVersion::Exact(n),
                            vec![event(n)],
                        )
                        .await
                        .expect("append");
                    commits.push(done.position.commit());
                }
                commits
            }));
        }
        let mut commits = Vec::new();
        for handle in handles {
            commits.extend(handle.await.expect("join"));
        }
        let distinct: std::collections::HashSet<u64> = commits.iter().copied().collect();
        let shared = distinct.len() < commits.len();
        assert_eq!(
            shared,
            grouped,
            "above {above} with {tasks} tasks: {} appends in {} commits",
            commits.len(),
            distinct.len()
        );
        // Grouped ones came through append_group (group_request set), the others not.
        let via_group: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM annals.events WHERE group_request IS NOT NULL",
        )
        .fetch_one(store.pool())
        .await
        .expect("count");
        assert_eq!(
            via_group > 0,
            grouped,
            "above {above}: {via_group} grouped events"
        );
    }
    dbs.drop_all().await;
}

/// A store in a fresh database that groups every append, its committer started.
async fn grouping_store(dbs: &TestDatabases) -> PgEventStore {
    let store = dbs
        .store_with(
            PgStoreOptions::new()
                .notify(false)
                .group_commit(true)
                .group_commit_above(0),
        )
        .await;
    store
        .append_to_stream("warm", ExpectedVersion::Any, vec![event(0)])
        .await
        .expect("warm");
    store
}

/// Blocks the committer: an open transaction holds an event id, so the group that inserts
/// it waits on the unique index until the transaction ends.
async fn hold_event_id(store: &PgEventStore, id: Uuid) -> PgConnection {
    let mut blocker = PgConnection::connect_with(&store.pool().connect_options())
        .await
        .expect("blocker");
    blocker.execute("BEGIN").await.expect("begin");
    sqlx::query(
        "INSERT INTO annals.events (event_id, stream_id, stream_version, event_type, schema_version, payload)
         VALUES ($1, 'blocker', 1, 't', 1, '{}')",
    )
    .bind(id)
    .execute(&mut blocker)
    .await
    .expect("blocking insert");
    blocker
}

/// The group's requests: two chained appends to one new stream, one conflict, appends to
/// distinct streams.
fn group_requests(tag: &str) -> Vec<StreamAppend> {
    let mut appends = vec![
        StreamAppend::new(
            format!("{tag}-chain"),
            ExpectedVersion::NoStream,
            vec![event(1)],
        ),
        StreamAppend::new(
            format!("{tag}-chain"),
            ExpectedVersion::Exact(1),
            vec![event(2), event(3)],
        ),
        StreamAppend::new(
            format!("{tag}-refused"),
            ExpectedVersion::Exact(5),
            vec![event(4)],
        ),
    ];
    for n in 0..12 {
        appends.push(StreamAppend::new(
            format!("{tag}-own-{n}"),
            ExpectedVersion::Any,
            vec![event(10 + n)],
        ));
    }
    appends
}

/// Sends every request from its own task and returns the answers in request order.
async fn append_all(
    store: &PgEventStore,
    appends: &[StreamAppend],
) -> Vec<tokio::task::JoinHandle<Result<AppendResult, Error>>> {
    appends
        .iter()
        .map(|a| {
            let (store, a) = (store.clone(), a.clone());
            tokio::spawn(async move { store.append(vec![a]).await })
        })
        .collect()
}

/// Checks the answers of `group_requests`: the chain chained, the refusal refused, every
/// event stored once where its answer says, and all written in one commit.
async fn check_group(
    store: &PgEventStore,
    appends: &[StreamAppend],
    answers: Vec<Result<AppendResult, Error>>,
) {
    let mut commits = std::collections::HashSet::new();
    for (append, answer) in appends.iter().zip(&answers) {
        if append.stream_id.ends_with("-refused") {
            assert!(
                matches!(answer, Err(Error::Conflict { actual: 0, .. })),
                "{answer:?}"
            );
            continue;
        }
        let result = answer.as_ref().expect("append answered");
        commits.insert(result.position.commit());
        let first = result.version() + 1 - append.events.len() as u64;
        for (i, e) in append.events.iter().enumerate() {
            let rows: Vec<(String, i64, i64)> = sqlx::query_as(
                "SELECT stream_id, stream_version, global_position FROM annals.events WHERE event_id = $1",
            )
            .bind(e.event_id)
            .fetch_all(store.pool())
            .await
            .expect("look up");
            assert_eq!(rows.len(), 1, "event stored {} times", rows.len());
            assert_eq!(
                (rows[0].0.as_str(), rows[0].1 as u64),
                (append.stream_id.as_str(), first + i as u64)
            );
            if i + 1 == append.events.len() {
                assert_eq!(
                    rows[0].2 as u64,
                    result.position.sequence(),
                    "position as answered"
                );
            }
        }
    }
    let chain = answers[1].as_ref().expect("chained");
    assert_eq!(
        chain.version(),
        3,
        "the second append to a stream in a group chains"
    );
    let refused: i64 =
        sqlx::query_scalar("SELECT count(*) FROM annals.events WHERE stream_id LIKE '%-refused'")
            .fetch_one(store.pool())
            .await
            .expect("count");
    assert_eq!(refused, 0);
    assert_eq!(commits.len(), 1, "the group was not one commit");
    // The chain's two appends share a commit and stay two appends: each repeats alone,
    // both at once do not.
    let merged: Vec<NewEvent> = appends[0]
        .events
        .iter()
        .chain(&appends[1].events)
        .cloned()
        .collect();
    let both = store
        .append(vec![StreamAppend::new(
            &appends[0].stream_id,
            ExpectedVersion::Any,
            merged,
        )])
        .await;
    assert!(
        matches!(both, Err(Error::DuplicateEvent { .. })),
        "two appends repeated as one: {both:?}"
    );
    for (append, answer) in appends.iter().zip(&answers).take(2) {
        let again = store.append(vec![append.clone()]).await.expect("repeat");
        assert_eq!(
            Some(&again),
            answer.as_ref().ok(),
            "a repeat of one append of the chain"
        );
    }
}

/// A group-committing store on one connection through a proxy in front of `direct`'s
/// server (no ping on acquire: its reply would be swallowed; no NOTIFY), its committer
/// started and its statement prepared while replies still arrive.
async fn grouped_through_proxy(direct: &PgEventStore, acquire: Duration) -> (Proxy, PgEventStore) {
    let options = direct.pool().connect_options().as_ref().clone();
    let upstream = tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .expect("resolve")
        .next()
        .expect("an address");
    let proxy = Proxy::start(upstream).await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .acquire_timeout(acquire)
        .connect_with(options.host("127.0.0.1").port(proxy.addr.port()))
        .await
        .expect("pool through the proxy");
    let store = PgEventStore::with_options(
        pool,
        PgStoreOptions::new()
            .notify(false)
            .group_commit(true)
            .group_commit_above(0),
    )
    .expect("options");
    store
        .append_to_stream("warm", ExpectedVersion::Any, vec![event(0)])
        .await
        .expect("warm");
    while store.pool().num_idle() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (proxy, store)
}

/// Waits until the server has committed event `id`.
async fn wait_until_stored(direct: &PgEventStore, id: Uuid) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM annals.events WHERE event_id = $1)",
    )
    .bind(id)
    .fetch_one(direct.pool())
    .await
    .expect("look")
    {
        assert!(Instant::now() < deadline, "the append never committed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The server commits a group and the reply is lost with the connection: every caller of
/// the group is answered with what was committed, once, and the refused one stays refused.
#[tokio::test(flavor = "current_thread")]
async fn a_group_whose_commit_reply_is_lost_answers_every_caller_once() {
    let dbs = TestDatabases::default();
    let direct = dbs.store().await;
    let (proxy, store) = grouped_through_proxy(&direct, Duration::from_secs(10)).await;
    proxy.swallow_replies();
    let appends = group_requests("lost");
    // On this single-threaded runtime every task queues its append before the committer
    // runs: they form one group.
    let tasks = append_all(&store, &appends).await;
    wait_until_stored(&direct, appends[0].events[0].event_id).await;
    proxy.cut_all();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("join"));
    }
    check_group(&direct, &appends, answers).await;
    dbs.drop_all().await;
}

/// The server process running a group is terminated mid-statement: nothing of the group
/// is stored, and every caller's append is then written once on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_killed_mid_commit_writes_each_append_once() {
    let dbs = TestDatabases::default();
    let store = grouping_store(&dbs).await;
    let mut appends = group_requests("killed");
    let held = Uuid::now_v7();
    let last = appends.len() - 1;
    appends[last].events[0].event_id = held;
    let mut blocker = hold_event_id(&store, held).await;
    let tasks = append_all(&store, &appends).await;
    let mut admin = PgConnection::connect_with(&store.pool().connect_options())
        .await
        .expect("admin");
    // The group waits on the held id: find its backend and kill it.
    let pid = backend_where(
        &mut admin,
        "query LIKE '%append_group%' AND wait_event_type = 'Lock'",
    )
    .await;
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut admin)
        .await
        .expect("terminate");
    // The last caller's retry waits for the held id too; the others are answered now.
    let ids: Vec<Uuid> = appends
        .iter()
        .flat_map(|a| &a.events)
        .map(|e| e.event_id)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stored: i64 =
            sqlx::query_scalar("SELECT count(*) FROM annals.events WHERE event_id = ANY ($1)")
                .bind(&ids)
                .fetch_one(&mut admin)
                .await
                .expect("count");
        if stored == ids.len() as i64 - 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the retries did not write ({stored} stored)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    blocker.execute("ROLLBACK").await.expect("release the id");
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("join"));
    }
    answered_once(&store, &appends, &answers).await;
    let _ = admin.close().await;
    dbs.drop_all().await;
}

/// Checks answers of `group_requests` retried one by one after their group failed: every
/// answer is its own (the refusal refused), every written append stored once where its
/// answer says. The chain's second append may now run before the first: a serial order in
/// which it conflicts is as valid as the group's.
async fn answered_once(
    store: &PgEventStore,
    appends: &[StreamAppend],
    answers: &[Result<AppendResult, Error>],
) {
    for (append, answer) in appends.iter().zip(answers) {
        match answer {
            Err(Error::Conflict { actual: 0, .. })
                if append.stream_id.ends_with("-refused")
                    || append.expected == ExpectedVersion::Exact(1) => {}
            Ok(result) => {
                let first = result.version() + 1 - append.events.len() as u64;
                for (i, e) in append.events.iter().enumerate() {
                    let rows: Vec<(String, i64)> = sqlx::query_as(
                        "SELECT stream_id, stream_version FROM annals.events WHERE event_id = $1",
                    )
                    .bind(e.event_id)
                    .fetch_all(store.pool())
                    .await
                    .expect("look up");
                    assert_eq!(
                        rows,
                        vec![(append.stream_id.clone(), (first + i as u64) as i64)]
                    );
                }
            }
            other => panic!("{}: {other:?}", append.stream_id),
        }
    }
    match &answers[1] {
        Ok(result) => assert_eq!(result.version(), 3),
        Err(Error::Conflict { actual: 0, .. }) => {}
        other => panic!("the chain's second append: {other:?}"),
    }
}

/// The server process running a group is terminated while it commits (a deferred trigger
/// holds the COMMIT open): nothing of the group is stored, and every caller's append is
/// then written once on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_killed_during_its_commit_writes_each_append_once() {
    let dbs = TestDatabases::default();
    let store = grouping_store(&dbs).await;
    install_slow_commits(&store, true).await;
    let appends = group_requests("dying");
    let tasks = append_all(&store, &appends).await;
    let mut admin = PgConnection::connect_with(&store.pool().connect_options())
        .await
        .expect("admin");
    let pid = backend_where(
        &mut admin,
        "wait_event = 'PgSleep' AND query LIKE '%append_group%'",
    )
    .await;
    // Commits are quick again for the retries; then the dying commit is killed.
    slow_commits(&store, false).await;
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut admin)
        .await
        .expect("terminate");
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("join"));
    }
    answered_once(&store, &appends, &answers).await;
    let _ = admin.close().await;
    dbs.drop_all().await;
}

/// A group dies in its commit together with every idle connection of a pool that does not
/// ping (a server restart): the caller's retry goes through the dead connections to a live
/// one and is answered, not told the outcome is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_group_is_answered_after_every_idle_connection_died() {
    let dbs = TestDatabases::default();
    let store = dbs
        .connected_store(
            PgStoreOptions::new()
                .notify(false)
                .group_commit(true)
                .group_commit_above(0),
        )
        .await;
    install_slow_commits(&store, false).await;
    // Several idle connections.
    let warm: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.head().await })
        })
        .collect();
    for task in warm {
        task.await.expect("join").expect("warm the pool");
    }
    slow_commits(&store, true).await;
    let append = StreamAppend::new("restart", ExpectedVersion::NoStream, vec![event(1)]);
    let task = {
        let (store, append) = (store.clone(), append.clone());
        tokio::spawn(async move { store.append(vec![append]).await })
    };
    let mut admin = PgConnection::connect_with(&store.pool().connect_options())
        .await
        .expect("admin");
    backend_where(&mut admin, "wait_event = 'PgSleep'").await;
    admin
        .execute("UPDATE public.slow_commit SET slow = false")
        .await
        .expect("fast commits");
    let idle = store.pool().num_idle();
    assert!(idle >= 4, "only {idle} idle connections to kill");
    assert!(kill_sessions(&mut admin, &store).await > 4);
    let done = task
        .await
        .expect("join")
        .expect("answered once a live connection was found");
    assert_eq!(done.version(), 1);
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM annals.events WHERE stream_id = 'restart'")
            .fetch_one(&mut admin)
            .await
            .expect("count");
    assert_eq!(stored, 1);
    let _ = admin.close().await;
    dbs.drop_all().await;
}

/// One request the database refuses (a JSON string with \u0000, which jsonb cannot hold)
/// fails its group's statement: it gets its own typed error, and every other request of
/// the group is written once.
#[tokio::test(flavor = "current_thread")]
async fn a_bad_payload_in_a_group_fails_only_its_own_append() {
    let dbs = TestDatabases::default();
    let store = grouping_store(&dbs).await;
    let mut appends = group_requests("bad");
    let bad = NewEvent::new(
        "t",
        1,
        annals_core::Encoding::Json,
        br#"{"s":"a\u0000b"}"#.to_vec(),
    );
    appends.insert(
        5,
        StreamAppend::new("bad-payload", ExpectedVersion::Any, vec![bad]),
    );
    // On this single-threaded runtime every task queues before the committer runs.
    let tasks = append_all(&store, &appends).await;
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("join"));
    }
    let refused = answers.remove(5);
    assert!(
        matches!(refused, Err(Error::InvalidInput(_))),
        "the bad payload: {refused:?}"
    );
    appends.remove(5);
    answered_once(&store, &appends, &answers).await;
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM annals.events WHERE stream_id = 'bad-payload'")
            .fetch_one(store.pool())
            .await
            .expect("count");
    assert_eq!(stored, 0);
    dbs.drop_all().await;
}

/// A server that stays away: an append whose group may have committed says its outcome is
/// unknown (typed), never success or a plain failure.
#[tokio::test(flavor = "current_thread")]
async fn a_lost_group_with_the_server_gone_reports_an_unknown_outcome() {
    let dbs = TestDatabases::default();
    let direct = dbs.store().await;
    let (proxy, store) = grouped_through_proxy(&direct, Duration::from_millis(500)).await;
    proxy.swallow_replies();
    let append = StreamAppend::new("gone", ExpectedVersion::NoStream, vec![event(1)]);
    let task = {
        let (store, append) = (store.clone(), append.clone());
        tokio::spawn(async move { store.append(vec![append]).await })
    };
    wait_until_stored(&direct, append.events[0].event_id).await;
    // The server goes away for good: no retry can reach it.
    proxy.go_down();
    let answer = task.await.expect("join");
    let Err(Error::Backend(cause)) = &answer else {
        panic!("expected an unknown outcome, got {answer:?}")
    };
    assert!(
        cause.downcast_ref::<OutcomeUnknown>().is_some(),
        "expected OutcomeUnknown, got {cause}"
    );
    // It did commit: appending again through a working store says so.
    let again = direct
        .append(vec![append])
        .await
        .expect("the append, again");
    assert_eq!(again.version(), 1);
    dbs.drop_all().await;
}
