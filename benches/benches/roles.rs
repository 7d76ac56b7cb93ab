//! What the append-only application role costs an append: the same one-event appends as
//! the schema's owner and as a login role in a role set up by `grant_app_role` (column-level
//! INSERT on events, no UPDATE or DELETE), interleaved in the same run.
//!
//! Run with: `cargo bench -p annals-benches --bench roles` (PostgreSQL at `DATABASE_URL`,
//! whose role must be allowed to create roles; it drops and recreates `annals_bench`, and
//! creates and drops the roles `annals_bench_app` and `annals_bench_login`).

use std::sync::atomic::{AtomicU64, Ordering};

use annals_benches::{bench_pool, interleave, print_interleaved, runtime, store};
use annals_core::{encode_event, Encoding, EventStore, ExpectedVersion};
use annals_store_postgres::{PgEventStore, PgStoreOptions};
use bank::AccountEvent;
use sqlx::{Executor, PgPool};

const GROUP: &str = "annals_bench_app";
const LOGIN: &str = "annals_bench_login";

async fn append(store: &PgEventStore, stream: &str, expected: u64) {
    let event =
        encode_event(&AccountEvent::Deposited { amount: 1 }, Encoding::Json).expect("encode");
    store
        .append_to_stream(stream, ExpectedVersion::Exact(expected), vec![event])
        .await
        .expect("append");
}

async fn drop_roles(pool: &PgPool) {
    for role in [LOGIN, GROUP] {
        pool.execute(format!("DROP ROLE IF EXISTS {role}").as_str())
            .await
            .expect("drop role");
    }
}

fn main() {
    let rt = runtime();
    let (pool, owner, app) = rt.block_on(async {
        let pool = bench_pool().await;
        drop_roles(&pool).await;
        let owner = store(&pool, "annals").await;
        owner.grant_app_role(GROUP).await.expect("grant");
        pool.execute(format!("CREATE ROLE {LOGIN} LOGIN; GRANT {GROUP} TO {LOGIN}").as_str())
            .await
            .expect("login role");
        let options = pool.connect_options();
        let url = format!(
            "postgres://{LOGIN}@{}:{}/annals_bench",
            options.get_host(),
            options.get_port()
        );
        let app = PgEventStore::connect_with(&url, PgStoreOptions::new().max_connections(4))
            .await
            .expect("connect as the application role");
        (pool, owner, app)
    });
    let (owner_version, app_version) = (AtomicU64::new(0), AtomicU64::new(0));
    let results = rt.block_on(interleave(
        40,
        50,
        || append(&app, "app", app_version.fetch_add(1, Ordering::SeqCst)),
        || {
            append(
                &owner,
                "owner",
                owner_version.fetch_add(1, Ordering::SeqCst),
            )
        },
    ));
    print_interleaved(
        "one-event appends as the application role vs as the owner (ratio: median round)",
        &[("append_1 as annals_bench_app", results)],
    );
    rt.block_on(async {
        app.pool().close().await;
        pool.execute("DROP SCHEMA annals CASCADE")
            .await
            .expect("drop schema");
        pool.execute(format!("REVOKE ALL ON SCHEMA public FROM {GROUP}").as_str())
            .await
            .expect("revoke");
        drop_roles(&pool).await;
    });
}
