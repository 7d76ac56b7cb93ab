//! TLS and credentials against private nats-servers the tests start with certificates they
//! generate and authorization on: the right settings relay events, wrong credentials and
//! untrusted certificates are refused with typed, clear errors, and no secret shows up in
//! an error or in a log at TRACE level.

mod common;

use std::{io::Write, path::Path};

use annals_nats::{Error, NatsOptions, Secret};
use common::{
    secure::{relays_through, users_config, Pki},
    NatsServer,
};

#[track_caller]
fn expect_tls_error(result: annals_nats::Result<async_nats::Client>, what: &str) -> String {
    match result {
        Err(e @ Error::Tls { .. }) => e.to_string(),
        Err(other) => panic!("{what}: expected a TLS error, got {other:?}"),
        Ok(_) => panic!("{what}: connected, but should have been refused"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_authority() {
    let pki = Pki::new();
    let nats = NatsServer::start_with(Some(&pki.server_tls(false)), &[]).await;
    let url = format!("tls://localhost:{}", nats.port());

    relays_through(NatsOptions::new(&url).tls_root_cert(pki.path("ca.pem"))).await;
    // By address too: the certificate names 127.0.0.1.
    NatsOptions::new(format!("tls://127.0.0.1:{}", nats.port()))
        .tls_root_cert(pki.path("ca.pem"))
        .connect()
        .await
        .expect("TLS by address");

    // The system's roots do not know this authority; nor does someone else's.
    let message = expect_tls_error(
        NatsOptions::new(&url).require_tls(true).connect().await,
        "system roots",
    );
    assert!(
        message.contains("certificate") && message.contains(&nats.port().to_string()),
        "the error says what failed and where: {message}"
    );
    expect_tls_error(
        NatsOptions::new(&url)
            .tls_root_cert(pki.path("other-ca.pem"))
            .connect()
            .await,
        "another authority",
    );
    // A root file that is not there is a configuration error, not a hang.
    let missing = NatsOptions::new(&url)
        .tls_root_cert(pki.path("nowhere.pem"))
        .connect()
        .await
        .expect_err("a missing root file");
    assert!(
        missing.to_string().contains("nowhere.pem"),
        "names the file: {missing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates() {
    let pki = Pki::new();
    let nats = NatsServer::start_with(Some(&pki.server_tls(true)), &[]).await;
    let url = format!("tls://localhost:{}", nats.port());
    let trusted = || NatsOptions::new(&url).tls_root_cert(pki.path("ca.pem"));

    relays_through(trusted().tls_client_cert(pki.path("client.pem"), pki.path("client-key.pem")))
        .await;
    let refused = trusted()
        .connect()
        .await
        .expect_err("a server that verifies clients let one in without a certificate");
    assert!(
        matches!(refused, Error::Tls { .. } | Error::Unreachable { .. }),
        "{refused:?}"
    );
}

#[track_caller]
fn expect_unauthorized(result: annals_nats::Result<async_nats::Client>, secret: &str) {
    match result {
        Err(e @ Error::Unauthorized { .. }) => {
            let message = format!("{e} {e:?}");
            assert!(
                !message.contains(secret),
                "the error shows the secret: {message}"
            );
        }
        Err(other) => panic!("expected Unauthorized, got {other:?}"),
        Ok(_) => panic!("wrong credentials were accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_passwords_and_nkeys() {
    let user_key = nkeys::KeyPair::new_user();
    let nats = NatsServer::start_with(Some(&users_config(&user_key.public_key())), &[]).await;
    let url = nats.url();

    relays_through(NatsOptions::new(&url).user_password("relay", Secret::new("s3cret-pw"))).await;
    expect_unauthorized(
        NatsOptions::new(&url)
            .user_password("relay", Secret::new("wr0ng-pw"))
            .connect()
            .await,
        "wr0ng-pw",
    );
    expect_unauthorized(NatsOptions::new(&url).connect().await, "s3cret-pw");
    // Credentials in the URL work, and never show.
    let port = nats.port();
    NatsOptions::new(format!("nats://relay:s3cret-pw@127.0.0.1:{port}"))
        .connect()
        .await
        .expect("credentials from the URL");
    let in_url = NatsOptions::new(format!("nats://relay:wr0ng-pw@127.0.0.1:{port}"));
    assert!(!format!("{in_url:?} {}", in_url.servers_display()).contains("wr0ng-pw"));
    expect_unauthorized(in_url.connect().await, "wr0ng-pw");

    // NKeys: the server knows the public key; the client signs its challenge with the seed.
    let seed = user_key.seed().expect("seed");
    relays_through(NatsOptions::new(&url).nkey_seed(Secret::new(seed.clone()))).await;
    let stranger = nkeys::KeyPair::new_user().seed().expect("seed");
    expect_unauthorized(
        NatsOptions::new(&url)
            .nkey_seed(Secret::new(stranger.clone()))
            .connect()
            .await,
        &stranger,
    );
    let malformed = NatsOptions::new(&url)
        .nkey_seed(Secret::new("SUnot-a-seed"))
        .connect()
        .await
        .expect_err("a malformed seed");
    assert!(
        !malformed.to_string().contains("SUnot-a-seed"),
        "{malformed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens() {
    let nats =
        NatsServer::start_with(Some("authorization { token: \"t0ken-s3cret\" }\n"), &[]).await;
    relays_through(NatsOptions::new(nats.url()).token(Secret::new("t0ken-s3cret"))).await;
    expect_unauthorized(
        NatsOptions::new(nats.url())
            .token(Secret::new("t0ken-wr0ng"))
            .connect()
            .await,
        "t0ken-wr0ng",
    );
}

/// A signed NATS JWT (`header.claims.signature`, base64url without padding).
fn jwt(signer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let b64 = |bytes: &[u8]| data_encoding::BASE64URL_NOPAD.encode(bytes);
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": uuid::Uuid::now_v7().simple().to_string().to_uppercase(),
        "iat": chrono::Utc::now().timestamp(),
        "iss": signer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let body = b64(claims.to_string().as_bytes());
    let signed = format!("{header}.{body}");
    let signature = signer.sign(signed.as_bytes()).expect("sign");
    format!("{signed}.{}", b64(&signature))
}

fn creds_file(path: &Path, user_jwt: &str, user: &nkeys::KeyPair) {
    let mut file = std::fs::File::create(path).expect("creds");
    write!(
        file,
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().expect("seed")
    )
    .expect("write creds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creds_files_in_operator_mode() {
    // An operator, an account with JetStream, and a user of it; minted here, no nsc needed.
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "annals-test",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
    });
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "relays",
        serde_json::json!({"type": "account", "version": 2, "limits": unlimited}),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "relay",
        serde_json::json!({"type": "user", "version": 2, "subs": -1, "data": -1, "payload": -1}),
    );
    // JetStream needs a system account.
    let system = nkeys::KeyPair::new_account();
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2}),
    );
    let config = format!(
        "operator: {operator_jwt}\nsystem_account: {sys}\nresolver: MEMORY\n\
         resolver_preload: {{\n  {sys}: {system_jwt}\n  {}: {account_jwt}\n}}\n",
        account.public_key(),
        sys = system.public_key(),
    );
    let nats = NatsServer::start_with(Some(&config), &[]).await;
    let creds = nats.dir().join("relay.creds");
    creds_file(&creds, &user_jwt, &user);
    relays_through(NatsOptions::new(nats.url()).creds_file(&creds)).await;

    // A user signed by an account the server does not know.
    let stranger_account = nkeys::KeyPair::new_account();
    let stranger = nkeys::KeyPair::new_user();
    let stranger_jwt = jwt(
        &stranger_account,
        &stranger.public_key(),
        "stranger",
        serde_json::json!({"type": "user", "version": 2}),
    );
    let strange = nats.dir().join("stranger.creds");
    creds_file(&strange, &stranger_jwt, &stranger);
    let refused = NatsOptions::new(nats.url())
        .creds_file(&strange)
        .connect()
        .await
        .expect_err("a user of an unknown account");
    assert!(
        matches!(refused, Error::Unauthorized { .. } | Error::Config(_)),
        "{refused:?}"
    );
    let missing = NatsOptions::new(nats.url())
        .creds_file(nats.dir().join("nowhere.creds"))
        .connect()
        .await
        .expect_err("a missing .creds file");
    assert!(matches!(missing, Error::Config(_)), "{missing:?}");
}

/// Credentials the server refuses cannot start working by themselves: the relay's worker
/// fails for good (state `failed`, the error in status) instead of retrying forever, and a
/// service waiting on the engine hears of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_the_server_refuses_fails_instead_of_retrying() {
    use annals_projections::{PgCheckpoints, ProjectionEngine, SubscriptionState};

    let nats = NatsServer::start_with(
        Some(&users_config(&nkeys::KeyPair::new_user().public_key())),
        &[],
    )
    .await;
    let db = annals_store_postgres::testkit::TestDatabase::new().await;
    let store = db.store().clone();
    let (_, head) = common::append(&store, "account", 2, 5).await;
    let relay = annals_nats::Relay::new(
        "refused-relay",
        NatsOptions::new(nats.url()).user_password("relay", Secret::new("wr0ng-pw")),
        annals_nats::RelayOptions::new(),
    );
    let running = ProjectionEngine::new(store.clone(), PgCheckpoints::new(&store))
        .with_options(common::fast())
        .subscribe(relay)
        .start();
    let failed = tokio::time::timeout(std::time::Duration::from_secs(30), running.failure())
        .await
        .expect("the relay kept retrying refused credentials");
    let message = failed.to_string();
    assert!(
        message.contains("refused-relay") && message.contains("refused the credentials"),
        "{message}"
    );
    assert!(!message.contains("wr0ng-pw"), "{message}");
    let status = running.status().await.expect("status");
    assert_eq!(status[0].state, SubscriptionState::Failed);
    assert!(status[0]
        .error
        .as_deref()
        .is_some_and(|e| e.contains("refused")));
    let waited = running
        .wait_until_caught_up(head, std::time::Duration::from_secs(5))
        .await
        .expect_err("caught up without a relay");
    assert!(
        matches!(waited, annals_projections::Error::Failed { .. }),
        "{waited:?}"
    );
    running.shutdown().await;
    db.drop_database().await;
}
