//! The whole annals-core conformance suite against PostgreSQL, each check on a fresh
//! database with the real migrations.

mod common;

use annals_core::testkit::conformance;
use common::TestDatabases;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_passes_the_conformance_suite() {
    let dbs = TestDatabases::default();
    conformance::run(|| dbs.store()).await;
    dbs.drop_all().await;
}

/// The same suite with group commit on: grouped appends keep every promise of an append.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_with_group_commit_passes_the_conformance_suite() {
    let dbs = TestDatabases::default();
    conformance::run(|| {
        dbs.store_with(annals_store_postgres::PgStoreOptions::new().group_commit(true))
    })
    .await;
    dbs.drop_all().await;
}
