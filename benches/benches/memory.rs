//! The in-memory store: append and command throughput.
//!
//! Run with: `cargo bench -p annals-benches --bench memory`

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use annals_benches::{criterion_dir, print_summary, runtime, Pair};
use annals_core::{encode_event, Encoding, EventStore, ExpectedVersion, NewEvent, Repository};
use annals_store_memory::MemoryEventStore;
use bank::{AccountCommand, AccountEvent, BankAccount};
use criterion::{Criterion, Throughput};

fn deposit(amount: i64) -> NewEvent {
    encode_event(&AccountEvent::Deposited { amount }, Encoding::Json).expect("encode")
}

fn main() {
    let rt = runtime();
    let mut c = Criterion::default()
        .configure_from_args()
        .output_directory(&criterion_dir())
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let store = MemoryEventStore::new();

    let mut group = c.benchmark_group("memory_append");
    group.throughput(Throughput::Elements(1));
    let version = AtomicU64::new(0);
    group.bench_function("one", |b| {
        b.to_async(&rt).iter(|| async {
            let v = version.fetch_add(1, Ordering::SeqCst);
            store
                .append_to_stream("seq", ExpectedVersion::Exact(v), vec![deposit(1)])
                .await
                .expect("append");
        })
    });
    group.throughput(Throughput::Elements(100));
    let n = AtomicU64::new(0);
    group.bench_function("batch_100", |b| {
        b.to_async(&rt).iter(|| async {
            let stream = format!("batch-{}", n.fetch_add(1, Ordering::SeqCst));
            store
                .append_to_stream(
                    &stream,
                    ExpectedVersion::NoStream,
                    (0..100).map(deposit).collect(),
                )
                .await
                .expect("append");
        })
    });
    group.finish();

    let accounts = Repository::<BankAccount, _>::new(store.clone());
    rt.block_on(async {
        let open = AccountCommand::Open {
            owner: "Hot".into(),
            currency: "EUR".into(),
        };
        accounts.execute("hot", open).await.expect("open");
    });
    let mut group = c.benchmark_group("memory_command");
    group.throughput(Throughput::Elements(1));
    let n = AtomicU64::new(0);
    group.bench_function("fresh", |b| {
        b.to_async(&rt).iter(|| async {
            let id = format!("fresh-{}", n.fetch_add(1, Ordering::SeqCst));
            let open = AccountCommand::Open {
                owner: "Ada".into(),
                currency: "EUR".into(),
            };
            accounts.execute(&id, open).await.expect("open");
        })
    });
    group.bench_function("hot", |b| {
        b.to_async(&rt).iter(|| async {
            accounts
                .execute("hot", AccountCommand::Deposit { amount: 1 })
                .await
                .expect("deposit");
        })
    });
    group.finish();
    c.final_summary();
    print_summary(
        "annals in memory",
        &[
            Pair {
                group: "memory_append",
                annals: "one",
                baseline: None,
                events: 1,
            },
            Pair {
                group: "memory_append",
                annals: "batch_100",
                baseline: None,
                events: 100,
            },
            Pair {
                group: "memory_command",
                annals: "fresh",
                baseline: None,
                events: 1,
            },
            Pair {
                group: "memory_command",
                annals: "hot",
                baseline: None,
                events: 1,
            },
        ],
    );
}
