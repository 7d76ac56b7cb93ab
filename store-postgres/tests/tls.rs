//! TLS to PostgreSQL, against the local server (which has `ssl = on`): `require` connects,
//! `verify-ca` and `verify-full` with the server's certificate as the root connect by the
//! name the certificate carries, and an untrusted root or a host the certificate does not
//! name is refused with an error that says what to check; from the URL and from
//! `PgStoreOptions` alike.
//!
//! sqlx 0.8 checks the host name under `verify-ca` too (transact-rs/sqlx#3793, fixed in
//! sqlx 0.9, which we cannot use yet: it dropped TCP_NODELAY, transact-rs/sqlx#4335), so
//! `verify-ca` by an IP address the certificate lacks is refused: the test pins that, and
//! the error's advice, so the day it changes is noticed.

mod common;

use std::path::PathBuf;

use annals_core::Error;
use annals_store_postgres::{PgEventStore, PgStoreOptions, SslMode};
use common::database_url;
use sqlx::{Connection, PgConnection};

/// The server's certificate file, as the server reports it. The tests need the server on
/// this machine with TLS on; they fail (never skip) otherwise.
async fn server_certificate() -> PathBuf {
    let mut admin = PgConnection::connect(&database_url())
        .await
        .expect("the TLS tests need the server at DATABASE_URL");
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut admin)
        .await
        .expect("SHOW ssl");
    assert_eq!(ssl, "on", "the TLS tests need a server with ssl = on");
    let file: String = sqlx::query_scalar("SHOW ssl_cert_file")
        .fetch_one(&mut admin)
        .await
        .expect("SHOW ssl_cert_file");
    let _ = admin.close().await;
    let path = PathBuf::from(file);
    assert!(
        std::fs::metadata(&path).is_ok(),
        "the server's certificate {} must be readable here",
        path.display()
    );
    path
}

/// A certificate authority the server's certificate is not signed by.
fn other_root() -> PathBuf {
    let other = rcgen::generate_simple_self_signed(vec!["elsewhere.example".to_owned()])
        .expect("generate a certificate");
    let path = std::env::temp_dir().join(format!(
        "annals-other-root-{}.pem",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::write(&path, other.cert.pem()).expect("write the other root");
    path
}

fn with_params(url: &str, params: &str) -> String {
    let joiner = if url.contains('?') { '&' } else { '?' };
    format!("{url}{joiner}{params}")
}

/// DATABASE_URL with its host replaced (the local server is reachable by either name).
fn with_host(url: &str, host: &str) -> String {
    url.replace("127.0.0.1", host).replace("localhost", host)
}

async fn encrypted(store: &PgEventStore) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .expect("pg_stat_ssl")
}

#[track_caller]
fn expect_refused(result: annals_core::Result<PgEventStore>, what: &str, advice: &str) -> String {
    match result {
        Err(Error::Backend(e)) => {
            let message = e.to_string();
            assert!(
                message.contains("certificate") && message.contains(advice),
                "{what}: the error does not say what to check ({advice}): {message}"
            );
            message
        }
        Err(other) => panic!("{what}: expected a connection error, got {other:?}"),
        Ok(_) => panic!("{what}: connected, but should have been refused"),
    }
}

#[tokio::test]
async fn tls_modes_from_the_url() {
    let cert = server_certificate().await;
    let url = with_host(&database_url(), "127.0.0.1");
    let root = format!("sslrootcert={}", cert.display());

    let plain = PgEventStore::connect(&with_params(&url, "sslmode=disable"))
        .await
        .expect("disable");
    assert!(!encrypted(&plain).await);

    let required = PgEventStore::connect(&with_params(&url, "sslmode=require"))
        .await
        .expect("require connects without checking the certificate");
    assert!(encrypted(&required).await, "require did not encrypt");

    let localhost = with_host(&url, "localhost");
    let ca = PgEventStore::connect(&with_params(
        &localhost,
        &format!("sslmode=verify-ca&{root}"),
    ))
    .await
    .expect("verify-ca with the server's certificate as the root");
    assert!(encrypted(&ca).await);

    let full = PgEventStore::connect(&with_params(
        &localhost,
        &format!("sslmode=verify-full&{root}"),
    ))
    .await
    .expect("verify-full with the name the certificate carries");
    assert!(encrypted(&full).await);

    // The certificate names `localhost`, not 127.0.0.1: both verifying modes refuse the
    // address, and say to connect by the certificate's name.
    for mode in ["verify-full", "verify-ca"] {
        expect_refused(
            PgEventStore::connect(&with_params(&url, &format!("sslmode={mode}&{root}"))).await,
            &format!("{mode} on a name the certificate lacks"),
            "connect by a name the certificate carries",
        );
    }
    let other = other_root();
    let refused = expect_refused(
        PgEventStore::connect(&with_params(
            &url,
            &format!("sslmode=verify-ca&sslrootcert={}", other.display()),
        ))
        .await,
        "verify-ca with another root",
        "sslrootcert",
    );
    assert!(
        refused.contains("127.0.0.1"),
        "the error names the server: {refused}"
    );
    let _ = std::fs::remove_file(other);
}

#[tokio::test]
async fn tls_modes_from_the_options_override_the_url() {
    let cert = server_certificate().await;
    let url = with_host(&database_url(), "localhost");
    let options = || PgStoreOptions::new().max_connections(2);

    let required = PgEventStore::connect_with(&url, options().ssl_mode(SslMode::Require))
        .await
        .expect("require");
    assert!(encrypted(&required).await);

    let full = PgEventStore::connect_with(
        &with_params(&url, "sslmode=disable"),
        options().ssl_mode(SslMode::VerifyFull).ssl_root_cert(&cert),
    )
    .await
    .expect("the options' verify-full over the URL's disable");
    assert!(encrypted(&full).await);

    let other = other_root();
    expect_refused(
        PgEventStore::connect_with(
            &url,
            options().ssl_mode(SslMode::VerifyCa).ssl_root_cert(&other),
        )
        .await,
        "verify-ca with another root from the options",
        "sslrootcert",
    );
    let _ = std::fs::remove_file(other);
}

/// Everything the store opens besides the pool (LISTEN, projections' lease connections)
/// uses the same settings, so a server that requires TLS works end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_uses_tls_too() {
    let url = with_host(&database_url(), "127.0.0.1");
    let store = PgEventStore::connect(&with_params(&url, "sslmode=require"))
        .await
        .expect("require");
    let listener = sqlx::postgres::PgListener::connect_with(store.pool())
        .await
        .expect("listener");
    drop(listener);
    let options = store.pool().connect_options();
    let mut conn = PgConnection::connect_with(&options).await.expect("connect");
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .expect("pg_stat_ssl");
    assert!(
        ssl,
        "a connection made from the pool's options is not encrypted"
    );
}
