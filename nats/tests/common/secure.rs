//! Certificates and credentials for the TLS and authorization tests: an authority, server
//! and client certificates made with rcgen, a users block for nats-server, and a relay run
//! through given connection settings.

use std::path::PathBuf;

use annals_nats::{NatsOptions, Relay, RelayOptions, StreamSettings};
use annals_store_postgres::testkit::TestDatabase;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use super::{append, assert_exactly_once_in_order, bus, relay_until};

/// Certificates for one test: an authority, a server certificate for localhost and
/// 127.0.0.1, a client certificate, and an authority nobody trusts.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    pub fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("annals-pki-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("pki dir");
        let authority = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca")
        };
        let ca = authority("annals test CA");
        let other = authority("someone else's CA");
        let leaf = |names: Vec<String>, file: &str| {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(names)
                .expect("params")
                .signed_by(&key, &ca)
                .expect("sign");
            std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).expect("write");
            std::fs::write(dir.join(format!("{file}-key.pem")), key.serialize_pem())
                .expect("write");
        };
        leaf(vec!["localhost".into(), "127.0.0.1".into()], "server");
        leaf(vec!["annals-relay".into()], "client");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
        std::fs::write(dir.join("other-ca.pem"), other.pem()).expect("write");
        Self { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// A `tls { }` block for the server, verifying client certificates when asked.
    pub fn server_tls(&self, verify_clients: bool) -> String {
        let verify = if verify_clients {
            format!(
                "ca_file: {:?}\n  verify: true",
                self.path("ca.pem").display().to_string()
            )
        } else {
            String::new()
        };
        format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  timeout: 2\n  {verify}\n}}\n",
            self.path("server.pem").display().to_string(),
            self.path("server-key.pem").display().to_string(),
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Relays a few events through `options` and checks they all arrived: the settings work
/// for the whole relay (JetStream requests, publishes, acknowledgements), not just a
/// connect.
pub async fn relays_through(options: NatsOptions) {
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let (ids, head) = append(&store, "account", 3, 20).await;
    // A stream of its own: several calls may share a server.
    let id = uuid::Uuid::now_v7().simple().to_string();
    let stream = StreamSettings {
        name: format!("SECURE_{id}"),
        prefix: format!("secure_{id}"),
        ..StreamSettings::default()
    };
    let relay = Relay::new(
        "secure-relay",
        options.clone(),
        RelayOptions::new().stream(stream.clone()),
    );
    relay.connect().await.expect("the relay connects");
    relay_until(&store, relay, head).await;
    assert_exactly_once_in_order(&bus(&options, &stream.name).await, &ids);
    db.drop_database().await;
}

/// A server with users: one with a password, one with an NKey.
pub fn users_config(nkey_public: &str) -> String {
    format!(
        "authorization {{\n  users = [\n    {{ user: relay, password: \"s3cret-pw\" }}\n    {{ nkey: {nkey_public} }}\n  ]\n}}\n"
    )
}
