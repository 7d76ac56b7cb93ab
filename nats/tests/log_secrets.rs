//! `RUST_LOG=trace` shows no secret: with every target at TRACE (async-nats, sqlx, annals),
//! a relay that authenticates with a password over TLS, an NKey, failed attempts with wrong
//! credentials, and a PostgreSQL URL with a password. One test in its own binary, with a
//! global subscriber, so that every thread's events reach it.

mod common;

use std::sync::{Arc, Mutex};

use annals_nats::{NatsOptions, Secret};
use annals_store_postgres::testkit::TestDatabase;
use common::{
    append,
    secure::{relays_through, users_config, Pki},
    NatsServer,
};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_at_trace() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let pki = Pki::new();
    let user_key = nkeys::KeyPair::new_user();
    let seed = user_key.seed().expect("seed");
    let config = format!(
        "{}{}",
        pki.server_tls(false),
        users_config(&user_key.public_key())
    );
    let nats = NatsServer::start_with(Some(&config), &[]).await;
    let url = format!("tls://localhost:{}", nats.port());
    let trusted = || NatsOptions::new(&url).tls_root_cert(pki.path("ca.pem"));
    relays_through(trusted().user_password("relay", Secret::new("s3cret-pw"))).await;
    trusted()
        .nkey_seed(Secret::new(seed.clone()))
        .connect()
        .await
        .expect("nkey");
    let _ = trusted()
        .user_password("relay", Secret::new("wr0ng-pw"))
        .connect()
        .await;
    let _ = NatsOptions::new(format!("tls://relay:url-s3cret@localhost:{}", nats.port()))
        .tls_root_cert(pki.path("ca.pem"))
        .connect()
        .await;
    // The local server trusts every local connection, so the password is never asked
    // for; it is in the URL, and must not be in a log.
    let db = TestDatabase::new().await;
    let with_password = db.url().replacen("://root@", "://root:pg-s3cret@", 1);
    assert!(with_password.contains("pg-s3cret"), "{with_password}");
    let store = annals_store_postgres::PgEventStore::connect(&with_password)
        .await
        .expect("connect with a password in the URL");
    append(&store, "account", 1, 3).await;
    store.pool().close().await;
    let _ = annals_store_postgres::PgEventStore::connect(
        "postgres://annals:pg-s3cret@127.0.0.1:1/ledger",
    )
    .await;
    db.drop_database().await;

    let logs = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(
        logs.contains("TRACE") && logs.contains("CONNECT"),
        "the subscriber did not see the clients' TRACE logs"
    );
    for secret in [
        "s3cret-pw",
        "wr0ng-pw",
        "url-s3cret",
        "pg-s3cret",
        seed.as_str(),
    ] {
        if let Some(at) = logs.find(secret) {
            let line = logs[..at].rsplit('\n').next().unwrap_or_default();
            panic!("a secret in the logs: {line}{secret}...");
        }
    }
}
