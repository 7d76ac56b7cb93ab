//! Many writers of every append kind against a tailing reader: every acknowledged event
//! seen exactly once, at the version its writer was told, each stream in version order.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicUsize, Ordering::SeqCst},
        Arc,
    },
    time::{Duration, Instant},
};

use uuid::Uuid;

use super::{event, unique};
use crate::{
    AppendResult, EventStore, ExpectedVersion, NewEvent, ReadAll, RecordedEvent, StreamAppend,
};

/// What a [`concurrent_appends_with_tailing_reader`] run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TortureReport {
    /// Acknowledged events, each seen exactly once by the tailing reader.
    pub events: usize,
    /// Appends refused with a conflict (and retried, or given up as the test intends).
    pub conflicts: u64,
    /// Appends that spanned several streams.
    pub multi_stream: u64,
    /// Appends with `ExpectedVersion::Any`.
    pub any: u64,
}

/// The kinds of append the writers cycle through, so every path of a store (one event or
/// many, one stream or several, each expected version, creating or extending a stream)
/// races with every other on the same streams.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Any,
    Exact,
    StreamExists,
    /// `NoStream` on a stream nobody else creates (succeeds).
    NoStreamFresh,
    /// `NoStream` on a shared stream (conflicts once it exists).
    NoStreamShared,
    /// Two or three shared streams with mixed expectations.
    Multi,
}

const KINDS: [Kind; 8] = [
    Kind::Any,
    Kind::Exact,
    Kind::Any,
    Kind::Multi,
    Kind::StreamExists,
    Kind::NoStreamFresh,
    Kind::Any,
    Kind::NoStreamShared,
];

/// Per writer: what was acknowledged (event id -> stream and version it was told), what was
/// refused, and counts.
#[derive(Default)]
struct Written {
    acked: Vec<(Uuid, String, u64)>,
    refused: Vec<Uuid>,
    conflicts: u64,
    multi_stream: u64,
    any: u64,
}

impl Written {
    fn record(&mut self, appends: &[StreamAppend], result: &AppendResult) {
        for (append, stream) in appends.iter().zip(&result.streams) {
            assert_eq!(
                append.stream_id, stream.stream_id,
                "the result lists streams in another order than the append"
            );
            let first = stream.version + 1 - append.events.len() as u64;
            for (i, e) in append.events.iter().enumerate() {
                self.acked
                    .push((e.event_id, append.stream_id.clone(), first + i as u64));
            }
        }
    }
}

fn batch(n: usize) -> Vec<NewEvent> {
    (0..n as u64).map(|k| event("torture", k)).collect()
}

async fn one_writer<S: EventStore>(
    store: S,
    w: usize,
    appends: usize,
    streams: Arc<Vec<String>>,
    run: String,
) -> Written {
    let mut out = Written::default();
    // Deterministic per writer, different across writers.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ (w as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as usize
    };
    for i in 0..appends {
        let kind = KINDS[(w + i) % KINDS.len()];
        let size = 1 + next() % 3;
        let pick = |k: usize| streams[k % streams.len()].clone();
        let first = next();
        loop {
            let mut parts = Vec::new();
            match kind {
                Kind::Any => {
                    out.any += 1;
                    parts.push(StreamAppend::new(
                        pick(first),
                        ExpectedVersion::Any,
                        batch(size),
                    ));
                }
                Kind::Exact => {
                    let s = pick(first);
                    let v = store.stream_version(&s).await.expect("version");
                    parts.push(StreamAppend::new(s, ExpectedVersion::Exact(v), batch(size)));
                }
                Kind::StreamExists => parts.push(StreamAppend::new(
                    pick(first),
                    ExpectedVersion::StreamExists,
                    batch(size),
                )),
                Kind::NoStreamFresh => parts.push(StreamAppend::new(
                    format!("{run}-w{w}-{i}"),
                    ExpectedVersion::NoStream,
                    batch(size),
                )),
                Kind::NoStreamShared => parts.push(StreamAppend::new(
                    pick(first),
                    ExpectedVersion::NoStream,
                    batch(1),
                )),
                Kind::Multi => {
                    out.multi_stream += 1;
                    let span = 2 + first % 2;
                    for k in 0..span {
                        let s = pick(first + k * 7 + 1);
                        if parts.iter().any(|p: &StreamAppend| p.stream_id == s) {
                            continue;
                        }
                        let expected = match k {
                            0 => ExpectedVersion::Any,
                            1 => ExpectedVersion::Exact(
                                store.stream_version(&s).await.expect("version"),
                            ),
                            _ => ExpectedVersion::StreamExists,
                        };
                        parts.push(StreamAppend::new(s, expected, batch(1 + (k % 2))));
                    }
                }
            }
            tokio::task::yield_now().await;
            let ids: Vec<Uuid> = parts
                .iter()
                .flat_map(|p| p.events.iter().map(|e| e.event_id))
                .collect();
            match store.append(parts.clone()).await {
                Ok(result) => {
                    out.record(&parts, &result);
                    break;
                }
                Err(e) if e.is_conflict() => {
                    out.conflicts += 1;
                    out.refused.extend(ids);
                    // A shared stream that already exists stays refused: move on. The
                    // others re-read and try again.
                    if matches!(kind, Kind::NoStreamShared | Kind::StreamExists) {
                        break;
                    }
                }
                Err(e) => panic!("writer {w}, append {i} ({kind:?}): {e}"),
            }
        }
    }
    out
}

/// Many writers append to overlapping streams with every kind of append (all four
/// expected versions, one or many events, one or several streams, creating or extending
/// a stream), with real conflicts and retries, while a reader tails the global log.
///
/// The reader must see every acknowledged event exactly once, at the stream and version
/// its writer was told, in position order, each stream's events in gapless increasing
/// version order, and never an event whose append was refused.
///
/// # Panics
///
/// When any of that does not hold, or the run takes more than two minutes.
pub async fn concurrent_appends_with_tailing_reader<S: EventStore + Clone + 'static>(
    store: S,
    writers: usize,
    appends_per_writer: usize,
) -> TortureReport {
    let run = unique("torture");
    let streams: Arc<Vec<String>> = Arc::new(
        (0..(writers.max(2) * 3 / 4).max(3))
            .map(|i| format!("{run}-{i}"))
            .collect(),
    );
    let start = store.head().await.expect("head");
    let done = Arc::new(AtomicUsize::new(0));
    let acked_count = Arc::new(AtomicUsize::new(0));

    // The reader stops once every writer is done and it has seen as many events as were
    // acknowledged (a transaction elsewhere in the database may delay the last ones).
    let reader = {
        let store = store.clone();
        let (done, acked_count) = (done.clone(), acked_count.clone());
        tokio::spawn(async move {
            let mut seen: Vec<RecordedEvent> = Vec::new();
            let mut after = start;
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let finished = done.load(SeqCst) == writers;
                let page = store
                    .read_all(ReadAll::after(after).limit(7))
                    .await
                    .expect("read_all");
                if let Some(last) = page.last() {
                    assert!(last.position > after, "read_all went backwards");
                    after = last.position;
                    seen.extend(page);
                } else if finished && seen.len() >= acked_count.load(SeqCst) {
                    return seen;
                } else {
                    store
                        .wait_for_events(after, Duration::from_millis(50))
                        .await
                        .expect("wait");
                }
                assert!(
                    Instant::now() < deadline,
                    "tailing reader did not finish in time ({} of {} seen)",
                    seen.len(),
                    acked_count.load(SeqCst)
                );
            }
        })
    };

    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, streams, run) = (store.clone(), streams.clone(), run.clone());
            let (done, acked_count) = (done.clone(), acked_count.clone());
            tokio::spawn(async move {
                let written = one_writer(store, w, appends_per_writer, streams, run).await;
                acked_count.fetch_add(written.acked.len(), SeqCst);
                done.fetch_add(1, SeqCst);
                written
            })
        })
        .collect();
    let mut acked: HashMap<Uuid, (String, u64)> = HashMap::new();
    let mut refused: HashSet<Uuid> = HashSet::new();
    let mut report = TortureReport {
        events: 0,
        conflicts: 0,
        multi_stream: 0,
        any: 0,
    };
    for task in tasks {
        let written = task.await.expect("writer task");
        acked.extend(written.acked.into_iter().map(|(id, s, v)| (id, (s, v))));
        refused.extend(written.refused);
        report.conflicts += written.conflicts;
        report.multi_stream += written.multi_stream;
        report.any += written.any;
    }
    let seen = reader.await.expect("reader task");

    let mut once = HashSet::new();
    for e in &seen {
        assert!(once.insert(e.event_id), "event {} seen twice", e.event_id);
        assert!(
            !refused.contains(&e.event_id),
            "event {} of a refused append was seen",
            e.event_id
        );
        let Some((stream, version)) = acked.get(&e.event_id) else {
            panic!("event {} was never acknowledged", e.event_id);
        };
        assert_eq!(
            (&e.stream_id, e.stream_version),
            (stream, *version),
            "the log holds an event at another place than its writer was told"
        );
    }
    let missing = acked.keys().filter(|id| !once.contains(*id)).count();
    assert_eq!(
        missing, 0,
        "{missing} acknowledged events were never seen by the tailing reader"
    );
    assert!(
        seen.windows(2).all(|w| w[0].position < w[1].position),
        "positions out of order"
    );
    let mut next_version: HashMap<&str, u64> = HashMap::new();
    let mut out_of_order = Vec::new();
    for e in &seen {
        let next = next_version.entry(e.stream_id.as_str()).or_insert(1);
        if e.stream_version != *next {
            out_of_order.push(format!(
                "{}@{} after @{}",
                e.stream_id,
                e.stream_version,
                *next - 1
            ));
        }
        *next = e.stream_version.max(*next - 1) + 1;
    }
    assert!(
        out_of_order.is_empty(),
        "{} events out of stream order in the global log, first: {:?}",
        out_of_order.len(),
        &out_of_order[..out_of_order.len().min(5)]
    );
    assert!(
        report.conflicts > 0,
        "the writers never conflicted; the test did not test concurrency"
    );
    report.events = seen.len();
    tracing::info!(?report, "torture run complete");
    report
}
