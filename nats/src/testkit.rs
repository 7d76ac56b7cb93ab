//! Test support (feature `testkit`): a `nats-server -js` of a test's own (its own port and
//! store directory, killed and restarted at will), and readers of what a relay put on the
//! bus, with the checks every relay test makes.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use async_nats::jetstream;
use futures_util::StreamExt;

use crate::{headers, NatsOptions};

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
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    dir: PathBuf,
    config: Option<PathBuf>,
    extra: Vec<String>,
    child: Option<Child>,
}

/// Reads the port a server started with `-p -1 --ports_file_dir <dir>` listens on.
///
/// # Panics
///
/// When the server does not write its ports file within 10 s.
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
            "nats-server never wrote {}; its log:\n{}",
            file.display(),
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl NatsServer {
    /// A JetStream server on a free port, with `extra` command-line arguments and, when
    /// given, a configuration file (written into its directory).
    ///
    /// # Panics
    ///
    /// When nats-server cannot be started: tests that need it fail, never skip.
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
    ///
    /// # Panics
    ///
    /// As [`start_with`](NatsServer::start_with).
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
            // Its log, for the failure message when it does not come up.
            .stderr(
                std::fs::File::create(self.dir.join("server.log"))
                    .map_or_else(|_| Stdio::null(), Stdio::from),
            );
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

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its working directory (configuration, ports file, JetStream store).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Options connecting to it, without credentials.
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
    ///
    /// # Panics
    ///
    /// As [`start_with`](NatsServer::start_with).
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
    /// Its stream sequence.
    pub sequence: u64,
    /// Its subject.
    pub subject: String,
    /// The event it carries.
    pub event: annals_core::RecordedEvent,
    /// The previous version on its subject (header).
    pub previous_version: u64,
    /// Its headers.
    pub headers: async_nats::HeaderMap,
}

/// Every message of the JetStream stream `stream`, in stream order.
///
/// # Panics
///
/// When the server or the stream cannot be read, or a message is not an annals event.
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
///
/// # Panics
///
/// When it does not.
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
