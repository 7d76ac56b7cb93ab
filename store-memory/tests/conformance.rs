//! The whole annals-core conformance suite against the in-memory store.

use annals_core::testkit::conformance;
use annals_store_memory::MemoryEventStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_passes_the_conformance_suite() {
    conformance::run(|| async { MemoryEventStore::new() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_survives_a_larger_torture_run() {
    let report =
        conformance::concurrent_appends_with_tailing_reader(MemoryEventStore::new(), 16, 150).await;
    assert!(report.events >= 2_000 && report.conflicts > 0, "{report:?}");
}
