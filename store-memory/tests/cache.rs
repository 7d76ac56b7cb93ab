//! The repository's aggregate cache (`Repository::with_cache`): a command on a cached
//! aggregate reads nothing, and the cache never makes a command decide on a state the stream
//! has moved past, whoever wrote it. Two repositories over one store stand for two processes.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use annals_core::{
    Aggregate, AppendResult, DomainEvent, Error, EventStore, ExecuteError, Executed, Position,
    ReadAll, ReadStream, RecordedEvent, Repository, RepositoryOptions, Result, Snapshot,
    SnapshotStore, StreamAppend,
};
use annals_store_memory::MemoryEventStore;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Account {
    balance: u64,
    frozen: bool,
}

#[derive(Debug, Clone, Copy)]
enum Command {
    Deposit(u64),
    Withdraw(u64),
    Freeze,
    Unfreeze,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    #[serde(rename = "deposited")]
    Deposited { amount: u64 },
    #[serde(rename = "withdrew")]
    Withdrew { amount: u64 },
    #[serde(rename = "frozen")]
    Frozen,
    #[serde(rename = "unfrozen")]
    Unfrozen,
}
impl DomainEvent for AccountEvent {}

#[derive(Debug, PartialEq, thiserror::Error)]
enum Refused {
    #[error("insufficient funds")]
    Insufficient,
    #[error("account frozen")]
    Frozen,
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = Command;
    type Event = AccountEvent;
    type Error = Refused;

    fn handle(&self, command: Command) -> Result<Vec<AccountEvent>, Refused> {
        Ok(match command {
            Command::Deposit(_) | Command::Withdraw(_) if self.frozen => {
                return Err(Refused::Frozen)
            }
            Command::Deposit(amount) => vec![AccountEvent::Deposited { amount }],
            Command::Withdraw(amount) if amount > self.balance => {
                return Err(Refused::Insufficient)
            }
            Command::Withdraw(amount) => vec![AccountEvent::Withdrew { amount }],
            // Already so: nothing to do.
            Command::Freeze if self.frozen => vec![],
            Command::Unfreeze if !self.frozen => vec![],
            Command::Freeze => vec![AccountEvent::Frozen],
            Command::Unfreeze => vec![AccountEvent::Unfrozen],
        })
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Deposited { amount } => self.balance += amount,
            // Panics (an overdraft) if a withdrawal was decided on a stale balance and landed.
            AccountEvent::Withdrew { amount } => self.balance -= amount,
            AccountEvent::Frozen => self.frozen = true,
            AccountEvent::Unfrozen => self.frozen = false,
        }
    }
}

/// A store that counts the calls that read a stream (and appends), can fail an append
/// after committing it (a reply lost in the network), and can hold a call back.
#[derive(Clone, Debug, Default)]
struct Counted {
    inner: MemoryEventStore,
    reads: Arc<AtomicU64>,
    appends: Arc<AtomicU64>,
    lose_next_reply: Arc<AtomicBool>,
    hold_read: Slot,
    hold_append: Slot,
}

/// Where the next `load_stream` or `event_by_id` answers (after reading), or the next
/// append commits (before writing), only when the test says so.
type Slot = Arc<Mutex<Option<Hold>>>;

#[derive(Debug)]
struct Hold {
    reached: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// Holds the next call at `slot`: returns (it got there, let it go).
fn hold(slot: &Slot) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
    let (reached, got_there) = oneshot::channel();
    let (release, released) = oneshot::channel();
    *slot.lock().expect("hold") = Some(Hold {
        reached,
        release: released,
    });
    (got_there, release)
}

async fn held(slot: &Slot) {
    let hold = slot.lock().expect("hold").take();
    if let Some(hold) = hold {
        hold.reached.send(()).expect("the test waits for the call");
        hold.release.await.expect("the test lets the call go");
    }
}

impl Counted {
    /// Another process's view of the same store, with its own counters.
    fn sibling(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            ..Self::default()
        }
    }

    fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    fn appends(&self) -> u64 {
        self.appends.load(Ordering::SeqCst)
    }

    fn read(&self) {
        self.reads.fetch_add(1, Ordering::SeqCst);
    }
}

impl EventStore for Counted {
    async fn append(&self, appends: Vec<StreamAppend>) -> Result<AppendResult> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        held(&self.hold_append).await;
        let appended = self.inner.append(appends).await?;
        if self.lose_next_reply.swap(false, Ordering::SeqCst) {
            return Err(Error::backend("connection lost during commit"));
        }
        Ok(appended)
    }
    async fn read_stream(&self, stream_id: &str, read: ReadStream) -> Result<Vec<RecordedEvent>> {
        self.read();
        self.inner.read_stream(stream_id, read).await
    }
    async fn read_all(&self, read: ReadAll) -> Result<Vec<RecordedEvent>> {
        self.read();
        self.inner.read_all(read).await
    }
    async fn head(&self) -> Result<Position> {
        self.inner.head().await
    }
    async fn event_by_id(
        &self,
        stream_id: &str,
        event_id: uuid::Uuid,
    ) -> Result<Option<RecordedEvent>> {
        self.read();
        let found = self.inner.event_by_id(stream_id, event_id).await;
        held(&self.hold_read).await;
        found
    }
    async fn stream_version(&self, stream_id: &str) -> Result<u64> {
        self.read();
        self.inner.stream_version(stream_id).await
    }
    async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<bool> {
        self.inner.wait_for_events(after, timeout).await
    }
}

impl SnapshotStore for Counted {
    async fn load_snapshot(&self, s: &str, t: &str, v: u32) -> Result<Option<Snapshot>> {
        self.read();
        self.inner.load_snapshot(s, t, v).await
    }
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<bool> {
        self.inner.save_snapshot(snapshot).await
    }
    /// One read, as a store that loads in one round trip counts it.
    async fn load_stream(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        schema_version: u32,
    ) -> Result<(Option<Snapshot>, Vec<RecordedEvent>)> {
        self.read();
        let loaded = self
            .inner
            .load_stream(stream_id, aggregate_type, schema_version)
            .await;
        held(&self.hold_read).await;
        loaded
    }
}

type Accounts = Repository<Account, Counted>;

/// A repository with a cache of `capacity` over `store`, never snapshotting (so that the
/// appends counted are the commands').
fn cached(store: &Counted, capacity: usize) -> Accounts {
    Repository::new(store.clone())
        .with_options(RepositoryOptions::default().snapshot_every(None))
        .with_cache(capacity)
}

async fn deposit(accounts: &Accounts, id: &str, amount: u64) -> Executed<Account> {
    accounts
        .execute(id, Command::Deposit(amount))
        .await
        .expect("deposit")
}

#[tokio::test]
async fn a_hot_command_reads_nothing_and_appends_once() {
    let store = Counted::default();
    let accounts = cached(&store, 16);
    accounts
        .create("hot", Command::Deposit(1))
        .await
        .expect("open");
    for n in 2..=20 {
        let done = deposit(&accounts, "hot", 1).await;
        assert_eq!((done.version, done.state.balance), (n, n));
    }
    assert_eq!(
        store.reads(),
        0,
        "a command on a cached aggregate read the store"
    );
    assert_eq!(store.appends(), 20, "one append per command");

    // Without the cache, each command loads first.
    let plain = Repository::<Account, _>::new(store.clone());
    deposit(&plain, "hot", 1).await;
    assert_eq!(store.reads(), 1);
    // And a clone of the cached repository shares its cache.
    let done = deposit(&accounts.clone(), "hot", 1).await;
    assert_eq!(
        store.reads(),
        2,
        "the other writer's event must be read once"
    );
    assert_eq!((done.version, done.state.balance), (22, 22));
    deposit(&accounts, "hot", 1).await;
    assert_eq!(store.reads(), 2, "the clone refreshed the shared cache");
}

/// Process A decides a withdrawal on a cached balance of 0 that process B's deposit has made
/// wrong: the rejection must not be returned, the withdrawal is decided again on the real
/// balance and goes through.
#[tokio::test]
async fn a_rejection_on_a_stale_cache_is_decided_again_on_the_stream() {
    let a_store = Counted::default();
    let b_store = a_store.sibling();
    let (a, b) = (cached(&a_store, 16), cached(&b_store, 16));
    let seen = a.load_cached("ada").await.expect("load");
    assert_eq!((seen.version, seen.state.balance), (0, 0));
    deposit(&b, "ada", 50).await;

    let reads = a_store.reads();
    let done = a
        .execute("ada", Command::Withdraw(30))
        .await
        .expect("the deposit made the withdrawal possible");
    assert_eq!((done.version, done.state.balance, done.retries), (2, 20, 0));
    assert_eq!(
        a_store.reads() - reads,
        1,
        "one reload after the cached refusal"
    );
    // The reload refreshed the cache: the next command reads nothing.
    a.execute("ada", Command::Withdraw(20))
        .await
        .expect("withdraw the rest");
    assert_eq!(a_store.reads() - reads, 1);
    // And a refusal that holds on the real state is still returned.
    let refused = a.execute("ada", Command::Withdraw(1)).await.unwrap_err();
    assert_eq!(refused.rejection(), Some(&Refused::Insufficient));
    assert_eq!(a.load("ada").await.expect("load").state.balance, 0);
}

/// "Nothing to do" decided on a stale cache is decided again: A has the account cached as
/// not frozen, B froze it since, and A's unfreeze must unfreeze it.
#[tokio::test]
async fn a_no_op_on_a_stale_cache_is_decided_again_on_the_stream() {
    let a_store = Counted::default();
    let (a, b) = (cached(&a_store, 16), cached(&a_store.sibling(), 16));
    deposit(&a, "ada", 5).await;
    b.execute("ada", Command::Freeze).await.expect("freeze");

    let done = a.execute("ada", Command::Unfreeze).await.expect("unfreeze");
    assert_eq!(done.events, [AccountEvent::Unfrozen]);
    assert_eq!((done.version, done.state.frozen), (3, false));
    let stored = b.load("ada").await.expect("load");
    assert_eq!((stored.version, stored.state.frozen), (3, false));

    // A no-op that holds on the real state appends nothing.
    let reads = a_store.reads();
    let done = a.execute("ada", Command::Unfreeze).await.expect("unfreeze");
    assert!(done.events.is_empty() && done.position.is_none());
    assert_eq!(done.version, 3);
    assert_eq!(
        a_store.reads() - reads,
        1,
        "a no-op on the cache is confirmed on the stream"
    );
}

/// A conflict caused by the cache's staleness is not one of the configured retries: with
/// none allowed, a command on a stale cache still goes through.
#[tokio::test]
async fn a_stale_cache_conflict_does_not_use_up_the_retries() {
    let a_store = Counted::default();
    let options = RepositoryOptions::default()
        .snapshot_every(None)
        .max_conflict_retries(0);
    let a = Repository::<Account, _>::new(a_store.clone())
        .with_options(options)
        .with_cache(16);
    let b = cached(&a_store.sibling(), 16);
    deposit(&a, "ada", 1).await;
    deposit(&b, "ada", 10).await;

    let appends = a_store.appends();
    let done = deposit(&a, "ada", 100).await;
    assert_eq!(
        (done.version, done.state.balance, done.retries),
        (3, 111, 0)
    );
    assert_eq!(
        a_store.appends() - appends,
        2,
        "the append from the cache, then one after the reload"
    );
}

/// With room for two, the least recently used of three streams is evicted: a command on it
/// reads again, a command on the two others does not.
#[tokio::test]
async fn the_cache_holds_capacity_streams_and_evicts_the_least_recently_used() {
    let store = Counted::default();
    let accounts = cached(&store, 2);
    for id in ["a", "b"] {
        accounts
            .create(id, Command::Deposit(1))
            .await
            .expect("open");
    }
    assert_eq!(store.reads(), 0);
    // A read from the cache is a use: "a" is now more recent than "b".
    accounts.load_cached("a").await.expect("load cached");
    deposit(&accounts, "c", 1).await; // evicts "b"
    assert_eq!(store.reads(), 1, "only the new stream was read");
    deposit(&accounts, "a", 1).await;
    deposit(&accounts, "c", 1).await;
    assert_eq!(store.reads(), 1, "\"a\" and \"c\" stayed cached");

    // A command is a use: "a" is now more recent than "c".
    deposit(&accounts, "a", 1).await;
    let done = deposit(&accounts, "b", 1).await; // evicts "c"
    assert_eq!(store.reads(), 2, "\"b\" was evicted and read again");
    assert_eq!((done.version, done.state.balance), (2, 2));
    deposit(&accounts, "a", 1).await;
    assert_eq!(store.reads(), 2, "\"a\" stayed cached");
    let done = deposit(&accounts, "c", 1).await;
    assert_eq!(store.reads(), 3, "\"b\" evicted \"c\"");
    assert_eq!((done.version, done.state.balance), (3, 3));
}

/// `load` always reads the store; `load_cached` may answer from the cache, stale with
/// respect to other processes but never older than this process's own last command.
#[tokio::test]
async fn load_never_uses_the_cache_and_load_cached_may() {
    let a_store = Counted::default();
    let (a, b) = (cached(&a_store, 16), cached(&a_store.sibling(), 16));
    deposit(&a, "ada", 1).await;
    deposit(&b, "ada", 10).await;

    let loaded = a.load("ada").await.expect("load");
    assert_eq!((loaded.version, loaded.state.balance), (2, 11));
    let reads = a_store.reads();
    let cached = a.load_cached("ada").await.expect("load cached");
    assert_eq!(
        (cached.version, cached.state.balance, cached.from_snapshot),
        (1, 1, None),
        "served from the cache, as A last saw it"
    );
    assert_eq!(a_store.reads(), reads);

    let done = deposit(&a, "ada", 100).await;
    let cached = a.load_cached("ada").await.expect("load cached");
    assert_eq!((cached.version, cached.state.balance), (3, 111));
    assert_eq!((cached.version, cached.state), (done.version, done.state));

    // A miss loads and fills the cache.
    let reads = a_store.reads();
    let missed = a.load_cached("bob").await.expect("load cached");
    assert_eq!(missed.version, 0);
    a.load_cached("bob").await.expect("load cached");
    assert_eq!(a_store.reads() - reads, 1);
    // Without a cache, load_cached is load.
    let plain = Repository::<Account, _>::new(a_store.clone());
    assert_eq!(plain.load_cached("ada").await.expect("load").version, 3);
}

/// A load that read an older version and fills the cache after a command of this process
/// cached a newer one does not replace it.
#[tokio::test]
async fn a_fill_from_an_older_read_never_replaces_a_newer_entry() {
    let store = Counted::default();
    let accounts = cached(&store, 16);
    Repository::<Account, _>::new(store.clone())
        .execute("ada", Command::Deposit(1))
        .await
        .expect("deposit");
    let (read, release) = hold(&store.hold_read);
    let slow = tokio::spawn({
        let accounts = accounts.clone();
        async move { accounts.load_cached("ada").await }
    });
    read.await.expect("the slow load read version 1");
    let done = deposit(&accounts, "ada", 10).await;
    assert_eq!(done.version, 2);
    release.send(()).expect("release");
    let slow = slow.await.expect("join").expect("slow load");
    assert_eq!(slow.version, 1, "what it read");

    let reads = store.reads();
    let cached = accounts.load_cached("ada").await.expect("load cached");
    assert_eq!((cached.version, cached.state.balance), (2, 11));
    assert_eq!(store.reads(), reads, "served from the cache");
}

/// A load that read an older version and fills the cache after a newer entry was evicted
/// does not bring the older version back: `load_cached` is never older than this process's
/// own last successful command.
#[tokio::test]
async fn a_fill_from_before_an_eviction_is_dropped() {
    let store = Counted::default();
    let accounts = cached(&store, 1);
    Repository::<Account, _>::new(store.clone())
        .execute("ada", Command::Deposit(1))
        .await
        .expect("deposit");
    let (read, release) = hold(&store.hold_read);
    let slow = tokio::spawn({
        let accounts = accounts.clone();
        async move { accounts.load_cached("ada").await }
    });
    read.await.expect("the slow load read version 1");
    let done = deposit(&accounts, "ada", 10).await;
    assert_eq!(done.version, 2);
    deposit(&accounts, "bob", 1).await; // evicts "ada" (room for one)
    release.send(()).expect("release");
    assert_eq!(slow.await.expect("join").expect("slow load").version, 1);

    let cached = accounts.load_cached("ada").await.expect("load cached");
    assert_eq!(
        (cached.version, cached.state.balance),
        (2, 11),
        "older than this process's own last command"
    );
}

/// The same when this process's own command is the newer version and its result arrives
/// after the eviction: the older read still must not get in.
#[tokio::test]
async fn a_fill_from_before_a_dropped_command_result_is_dropped() {
    let store = Counted::default();
    let accounts = cached(&store, 1);
    Repository::<Account, _>::new(store.clone())
        .execute("ada", Command::Deposit(1))
        .await
        .expect("deposit");
    accounts.load_cached("ada").await.expect("load cached");
    // A command decided on the cached version 1 is about to commit version 2.
    let (appending, commit) = hold(&store.hold_append);
    let command = tokio::spawn({
        let accounts = accounts.clone();
        async move { accounts.execute("ada", Command::Deposit(10)).await }
    });
    appending.await.expect("the command is appending");
    accounts.load_cached("bob").await.expect("load cached"); // evicts "ada"
                                                             // A load reads version 1 before the command commits.
    let (read, release) = hold(&store.hold_read);
    let slow = tokio::spawn({
        let accounts = accounts.clone();
        async move { accounts.load_cached("ada").await }
    });
    read.await.expect("the slow load read version 1");
    commit.send(()).expect("commit");
    let done = command.await.expect("join").expect("command");
    assert_eq!(done.version, 2);
    release.send(()).expect("release");
    assert_eq!(slow.await.expect("join").expect("slow load").version, 1);

    let cached = accounts.load_cached("ada").await.expect("load cached");
    assert_eq!(
        (cached.version, cached.state.balance),
        (2, 11),
        "older than this process's own last command"
    );
}

/// Two attempts of one command race (a client's retry and the original), on different
/// states: the store answers the later append with the earlier one's result. That attempt
/// must answer with what was recorded, never cache its own state, which the stream does not
/// have (it would let the next command overdraw the account).
#[tokio::test]
async fn a_racing_repeat_of_a_command_is_answered_as_recorded_and_not_cached() {
    let a_store = Counted::default();
    let (a, b) = (cached(&a_store, 16), cached(&a_store.sibling(), 16));
    deposit(&a, "ada", 100).await;
    let command_id = uuid::Uuid::now_v7();
    // A decides the withdrawal on its cached balance of 100, after finding it not applied.
    let (read, release) = hold(&a_store.hold_read);
    let original = tokio::spawn({
        let a = a.clone();
        async move {
            a.execute_once("ada", command_id, Command::Withdraw(10))
                .await
        }
    });
    read.await.expect("A looked the command up");
    // Meanwhile B withdraws 80, then applies the same command (the client's retry).
    b.execute("ada", Command::Withdraw(80))
        .await
        .expect("withdraw");
    let retry = b
        .execute_once("ada", command_id, Command::Withdraw(10))
        .await
        .expect("retry");
    assert_eq!((retry.version, retry.state.balance), (3, 10));
    release.send(()).expect("release");

    let original = original.await.expect("join").expect("original");
    assert!(original.repeated, "A's append was answered as B's");
    assert_eq!(
        (
            original.version,
            original.state.balance,
            original.events.len()
        ),
        (3, 10, 1)
    );
    let refused = a.execute("ada", Command::Withdraw(50)).await.unwrap_err();
    assert_eq!(refused.rejection(), Some(&Refused::Insufficient));
    let stored = b.load("ada").await.expect("load");
    assert_eq!((stored.version, stored.state.balance), (3, 10));
}

/// A store error leaves the stream's version unknown (here the append committed but its
/// reply was lost): the entry is dropped and the next command reads the stream.
#[tokio::test]
async fn a_store_error_evicts_the_stream() {
    let store = Counted::default();
    let accounts = cached(&store, 16);
    deposit(&accounts, "ada", 1).await;
    store.lose_next_reply.store(true, Ordering::SeqCst);
    let err = accounts
        .execute("ada", Command::Deposit(10))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExecuteError::Store(Error::Backend(_))),
        "{err}"
    );

    let (reads, appends) = (store.reads(), store.appends());
    let done = deposit(&accounts, "ada", 100).await;
    assert_eq!(store.reads() - reads, 1, "the evicted stream was read");
    assert_eq!(
        store.appends() - appends,
        1,
        "an append decided on the entry from before the error"
    );
    assert_eq!((done.version, done.state.balance), (3, 111));
}

/// Commands with an id stay applied at most once with the cache on: the look-up still
/// happens, and a repeat is answered with the stream's current state, not the cache's.
#[tokio::test]
async fn execute_once_with_the_cache_applies_a_command_once() {
    let a_store = Counted::default();
    let (a, b) = (cached(&a_store, 16), cached(&a_store.sibling(), 16));
    let command_id = uuid::Uuid::now_v7();
    let first = a
        .execute_once("ada", command_id, Command::Deposit(5))
        .await
        .expect("first");
    assert_eq!((first.version, first.repeated), (1, false));

    let again = a
        .execute_once("ada", command_id, Command::Deposit(5))
        .await
        .expect("again");
    assert!(again.repeated);
    assert_eq!((again.version, again.events.len()), (1, 1));

    deposit(&b, "ada", 10).await;
    for process in [&a, &b] {
        let again = process
            .execute_once("ada", command_id, Command::Deposit(5))
            .await
            .expect("repeat");
        assert!(again.repeated, "applied twice");
        assert_eq!(again.version, 1, "the first application's version");
        assert_eq!(
            again.state.balance, 15,
            "the stream's state, not the cache's"
        );
    }
    let other = a
        .execute_once("ada", uuid::Uuid::now_v7(), Command::Deposit(100))
        .await
        .expect("another command");
    assert_eq!((other.version, other.state.balance), (3, 115));
    assert_eq!(b.load("ada").await.expect("load").state.balance, 115);
}

/// Two processes, each with its own cache and several tasks, on one stream: every success is
/// one distinct version, the state each success returns is the stream's at that version, no
/// deposit is lost or doubled, and no withdrawal was decided on a stale balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_their_own_caches_lose_no_update() {
    const TASKS: u64 = 6;
    const COMMANDS: u64 = 60;
    let a_store = Counted::default();
    let b_store = a_store.sibling();
    let options = RepositoryOptions::default()
        .snapshot_every(Some(7))
        .max_conflict_retries(10_000);
    let processes = [
        Repository::<Account, _>::new(a_store.clone())
            .with_options(options.clone())
            .with_cache(4),
        Repository::<Account, _>::new(b_store.clone())
            .with_options(options)
            .with_cache(4),
    ];
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let accounts = processes[(task % 2) as usize].clone();
            tokio::spawn(async move {
                let (mut successes, mut refused) = (Vec::new(), 0);
                let mut last = 0;
                for n in 0..COMMANDS {
                    // Small deposits and withdrawals that keep the balance near zero, where
                    // a stale balance would allow an overdraft or refuse a valid withdrawal.
                    // More is asked than deposited: some withdrawals must be refused.
                    let command = if n % 2 == 1 {
                        Command::Withdraw(4)
                    } else {
                        Command::Deposit((task + n) % 5 + 1)
                    };
                    match accounts.execute("shared", command).await {
                        Ok(done) => {
                            assert!(done.version > last, "versions went backwards in a task");
                            last = done.version;
                            successes.push((command, done.version, done.state));
                        }
                        Err(ExecuteError::Rejected(Refused::Insufficient)) => refused += 1,
                        Err(e) => panic!("{e}"),
                    }
                    tokio::task::yield_now().await;
                }
                (successes, refused)
            })
        })
        .collect();
    let (mut successes, mut refused) = (Vec::new(), 0);
    for task in tasks {
        let (done, no) = task.await.expect("task");
        successes.extend(done);
        refused += no;
    }
    let withdrawals = successes
        .iter()
        .filter(|(c, ..)| matches!(c, Command::Withdraw(_)))
        .count();
    assert!(refused > 0 && withdrawals > 0, "the balance never ran low");

    let versions: HashSet<u64> = successes.iter().map(|(_, v, _)| *v).collect();
    assert_eq!(
        versions.len(),
        successes.len(),
        "two successes share a version"
    );
    let mut expected = 0i64;
    for (command, ..) in &successes {
        match command {
            Command::Deposit(amount) => expected += *amount as i64,
            Command::Withdraw(amount) => expected -= *amount as i64,
            _ => unreachable!(),
        }
    }
    let stored = a_store
        .inner
        .read_stream("account-shared", ReadStream::all())
        .await
        .expect("read");
    assert_eq!(stored.len(), successes.len(), "an event without a success");

    // Replay: the balance never goes negative, and each success saw exactly the stream's
    // state at its version.
    let decoded = processes[0].events("shared").await.expect("events");
    let mut states = vec![Account::default()];
    for event in &decoded {
        let mut state = states.last().cloned().expect("a state");
        if let AccountEvent::Withdrew { amount } = event.payload {
            assert!(state.balance >= amount, "a withdrawal overdrew the account");
        }
        state.apply(&event.payload);
        states.push(state);
    }
    for (_, version, state) in &successes {
        assert_eq!(&states[*version as usize], state, "at version {version}");
    }
    let last = states.last().expect("a state");
    assert_eq!(
        last.balance as i64, expected,
        "a deposit was lost or doubled"
    );
    for process in &processes {
        let loaded = process.load("shared").await.expect("load");
        assert_eq!(&loaded.state, last);
    }
    println!(
        "{} successes ({withdrawals} withdrawals), {refused} refused; reads: a {}, b {}; appends: a {}, b {}",
        successes.len(),
        a_store.reads(),
        b_store.reads(),
        a_store.appends(),
        b_store.appends()
    );
}
