//! A private `nats-server -js` per test (on a port of its own, with a store directory of its
//! own, killed and restarted at will), and readers of what a relay put on the bus.

#![allow(dead_code, unreachable_pub)]

use std::{
    collections::HashMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use annals_core::{encode_event, Encoding, EventStore, ExpectedVersion, NewEvent, Position};
use annals_nats::{
    async_nats::{self, jetstream},
    headers, NatsOptions,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

/// The nats-server binary: `NATS_SERVER_BIN`, or the Debian package's.
pub fn nats_server_bin() -> String {
    std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| {
        if std::path::Path::new("/usr/sbin/nats-server").exists() {
            "/usr/sbin/nats-server".to_owned()
        } else {
            "nats-server".to_owned()
        }
    })
}

/// A nats-server of the test's own. Killed when dropped.
pub struct NatsServer {
    pub port: u16,
    pub dir: PathBuf,
    config: Option<PathBuf>,
    extra: Vec<String>,
    child: Option<Child>,
}

/// Reads the port a server started with `-p -1 --ports_file_dir <dir>` listens on.
pub async fn port_from_ports_file(dir: &std::path::Path, pid: u32) -> u16 {
    let file = dir.join(format!("nats-server_{pid}.ports"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let url = json["nats"][0].as_str().unwrap_or_default();
            if let Some(port) = url.rsplit(':').next().and_then(|p| p.parse().ok()) {
                return port;
            }
        }
        assert!(
            Instant::now() < deadline,
            "nats-server never wrote {}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl NatsServer {
    /// A JetStream server on a free port, with `extra` command-line arguments and, when
    /// given, a configuration file (written into its directory).
    pub async fn start_with(config: Option<&str>, extra: &[&str]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("annals-nats-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("server directory");
        let config = config.map(|text| {
            let path = dir.join("server.conf");
            std::fs::write(&path, text).expect("write the config");
            path
        });
        let mut server = Self {
            port: 0,
            dir,
            config,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
        };
        server.spawn().await;
        server
    }

    /// A plain JetStream server.
    pub async fn start() -> Self {
        Self::start_with(None, &[]).await
    }

    async fn spawn(&mut self) {
        let mut command = Command::new(nats_server_bin());
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        // The first start takes a free port from the kernel (no race with other tests);
        // restarts keep it, so clients reconnect to the same address.
        let port = if self.port == 0 {
            "-1".to_owned()
        } else {
            self.port.to_string()
        };
        command
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "--ports_file_dir"])
            .arg(&self.dir)
            .arg("-sd")
            .arg(self.dir.join("js"))
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "these tests start their own nats-server ({}): {e}; install the nats-server package or set NATS_SERVER_BIN",
                nats_server_bin()
            )
        });
        if self.port == 0 {
            self.port = port_from_ports_file(&self.dir, child.id()).await;
        }
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "nats-server did not start on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn options(&self) -> NatsOptions {
        NatsOptions::new(self.url())
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One message as a relay published it.
#[derive(Clone, Debug)]
pub struct OnTheBus {
    pub sequence: u64,
    pub subject: String,
    pub event: annals_core::RecordedEvent,
    pub previous_version: u64,
    pub headers: async_nats::HeaderMap,
}

/// Every message of `stream`, in stream order.
pub async fn bus(options: &NatsOptions, stream: &str) -> Vec<OnTheBus> {
    let client = options.connect().await.expect("connect to read the bus");
    let js = jetstream::new(client);
    let mut stream = js.get_stream(stream).await.expect("the relay's stream");
    let last = stream.info().await.expect("info").state.last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return out;
    }
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("reader");
    let mut messages = consumer.messages().await.expect("messages");
    while let Some(message) = messages.next().await {
        let message = message.expect("message");
        let info = message.info().expect("info");
        let sequence = info.stream_sequence;
        let decoded = headers::from_message(
            &message.subject,
            sequence,
            message.headers.as_ref(),
            &message.payload,
        )
        .expect("an annals event");
        out.push(OnTheBus {
            sequence,
            subject: message.subject.to_string(),
            event: decoded.event,
            previous_version: decoded.previous_version,
            headers: message.headers.clone().unwrap_or_default(),
        });
        if sequence >= last {
            break;
        }
    }
    out
}

/// Checks that the bus holds each of `expected` event ids exactly once and nothing else,
/// and that each subject's versions are in order with no gap.
pub fn assert_exactly_once_in_order(on_bus: &[OnTheBus], expected: &[uuid::Uuid]) {
    let mut seen: HashMap<uuid::Uuid, u64> = HashMap::new();
    for m in on_bus {
        if let Some(first) = seen.insert(m.event.event_id, m.sequence) {
            panic!(
                "event {} is on the bus twice (#{first} and #{})",
                m.event.event_id, m.sequence
            );
        }
    }
    let missing: Vec<_> = expected
        .iter()
        .filter(|id| !seen.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} events never reached the bus: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(
        seen.len(),
        expected.len(),
        "events on the bus that were never appended"
    );
    let mut next: HashMap<&str, u64> = HashMap::new();
    for m in on_bus {
        let want = next.entry(&m.subject).or_insert(1);
        assert_eq!(
            m.event.stream_version, *want,
            "{} out of order on the bus (#{})",
            m.subject, m.sequence
        );
        *want += 1;
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Ev {
    #[serde(rename = "noted")]
    Noted { n: u64 },
    #[serde(rename = "skipped")]
    Skipped,
}
impl annals_core::DomainEvent for Ev {}

pub fn noted(n: u64) -> NewEvent {
    encode_event(&Ev::Noted { n }, Encoding::Json).expect("encode")
}

/// Appends `count` events over `streams` streams of `category`; returns their ids and the
/// last position.
pub async fn append<S: EventStore>(
    store: &S,
    category: &str,
    streams: usize,
    count: usize,
) -> (Vec<uuid::Uuid>, Position) {
    let mut ids = Vec::new();
    let mut last = Position::START;
    for i in 0..count {
        let event = noted(i as u64);
        ids.push(event.event_id);
        last = store
            .append_to_stream(
                &format!("{category}-{}", i % streams),
                ExpectedVersion::Any,
                vec![event],
            )
            .await
            .expect("append")
            .position;
    }
    (ids, last)
}

/// Engine options for tests: small batches, quick restarts.
pub fn fast() -> annals_projections::EngineOptions {
    annals_projections::EngineOptions::default()
        .batch_size(50)
        .idle_wait(Duration::from_millis(50))
        .lease_retry(Duration::from_millis(20))
        .restart_backoff(Duration::from_millis(100))
}

/// Runs `relay` on `store` until it has handled everything up to `head`, then stops it.
pub async fn relay_until(
    store: &annals_store_postgres::PgEventStore,
    relay: annals_nats::Relay,
    head: Position,
) {
    let running = annals_projections::ProjectionEngine::new(
        store.clone(),
        annals_projections::PgCheckpoints::new(store),
    )
    .with_options(fast())
    .subscribe(relay)
    .start();
    running
        .wait_until_caught_up(head, Duration::from_secs(90))
        .await
        .expect("the relay caught up");
    running.shutdown().await;
}
