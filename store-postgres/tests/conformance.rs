//! The whole annals-core conformance suite against PostgreSQL, each check on a fresh
//! database with the real migrations: once as configured by default, once with group
//! commit on (grouped appends keep every promise of an append). One after the other: each
//! run holds a pool per fresh database until it ends, and two at once exceed the server's
//! connection limit.

mod common;

use annals_core::testkit::conformance;
use annals_store_postgres::PgStoreOptions;
use common::TestDatabases;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_passes_the_conformance_suite() {
    let dbs = TestDatabases::default();
    conformance::run(|| dbs.store()).await;
    dbs.drop_all().await;
    conformance::run(|| {
        dbs.store_with(
            PgStoreOptions::new()
                .group_commit(true)
                .group_commit_above(0),
        )
    })
    .await;
    dbs.drop_all().await;
}
