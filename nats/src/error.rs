/// `Result` with annals-nats' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong between annals and NATS. Messages name the servers (without any
/// credentials a URL may carry) and never a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No server could be reached (refused, timed out, unresolvable).
    #[error("cannot reach NATS at {servers}: {reason}")]
    Unreachable {
        /// The servers tried.
        servers: String,
        /// The client's reason.
        reason: String,
    },

    /// The server refused the credentials (user and password, token, NKey, .creds).
    #[error("NATS at {servers} refused the credentials (authorization violation): check the user, password, token, NKey seed or .creds file")]
    Unauthorized {
        /// The servers tried.
        servers: String,
    },

    /// The server's TLS certificate is not trusted, or TLS failed otherwise.
    #[error("TLS with NATS at {servers} failed: {reason} (the server's certificate must be signed by the root in the TLS CA setting and name the host connected to)")]
    Tls {
        /// The servers tried.
        servers: String,
        /// What failed.
        reason: String,
    },

    /// The options cannot be used (a file that cannot be read, a malformed seed, an
    /// environment variable with an invalid value).
    #[error("NATS configuration: {0}")]
    Config(String),

    /// JetStream is not enabled on the server (or this account).
    #[error("JetStream is not available on NATS at {servers}: start nats-server with -js (or enable JetStream for the account)")]
    JetStreamUnavailable {
        /// The servers tried.
        servers: String,
    },

    /// The JetStream stream exists with settings annals cannot work with, or cannot be
    /// created.
    #[error("JetStream stream `{stream}`: {problem}")]
    Stream {
        /// The stream's name.
        stream: String,
        /// What is wrong.
        problem: String,
    },

    /// A message cannot be formed from an event (a subject rule that gives an invalid
    /// subject, a message over the server's size limit).
    #[error("event {event_id} ({stream_id}@{version}) cannot be published: {problem}")]
    Unpublishable {
        /// The event.
        event_id: uuid::Uuid,
        /// Its stream.
        stream_id: String,
        /// Its version.
        version: u64,
        /// Why.
        problem: String,
    },

    /// A message on the bus does not carry what annals needs to decode it (it was not
    /// published by an annals relay, or it is corrupt).
    #[error("message {subject}#{sequence} is not an annals event: {problem}")]
    NotAnEvent {
        /// Its subject.
        subject: String,
        /// Its stream sequence.
        sequence: u64,
        /// What is missing or malformed.
        problem: String,
    },

    /// The server did not answer in time, or the connection dropped mid-request: the
    /// outcome is unknown (a publish is retried with the same message id).
    #[error("NATS request failed: {0}")]
    Request(String),
}

impl Error {
    /// Whether trying again later may succeed (the server is down or busy), as opposed to
    /// a setting that must change first (credentials, TLS, a misconfigured stream).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. } | Error::JetStreamUnavailable { .. } | Error::Request(_)
        )
    }
}
