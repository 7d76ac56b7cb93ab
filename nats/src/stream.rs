//! The JetStream stream a relay publishes into: created with the relay's settings, or
//! checked when it exists.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    context::{CreateStreamErrorKind, GetStreamErrorKind},
    stream::{Config, RetentionPolicy, StorageType},
    ErrorCode,
};

use crate::{Error, Result};

/// How the relay's JetStream stream is set up (when annals creates it) and what it must be
/// (when it exists).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSettings {
    /// The stream's name (default `ANNALS`).
    pub name: String,
    /// The subject prefix the relay publishes under; the stream captures `<prefix>.>`
    /// (default `annals`).
    pub prefix: String,
    /// How long JetStream remembers message ids to drop duplicates (default 2 minutes).
    /// The relay does not rely on it alone: after a restart it looks up what a subject
    /// already holds.
    pub duplicate_window: Duration,
    /// File (default) or memory storage.
    pub storage: StorageType,
    /// Replicas, for a clustered JetStream (default 1).
    pub replicas: usize,
    /// Largest message the stream stores, in bytes (`None`: the server's limit).
    pub max_message_size: Option<i32>,
    /// How long messages are kept (`None`: forever; the log is the source of truth, so a
    /// limit is fine as long as consumers keep up).
    pub max_age: Option<Duration>,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            name: "ANNALS".to_owned(),
            prefix: "annals".to_owned(),
            duplicate_window: Duration::from_secs(120),
            storage: StorageType::File,
            replicas: 1,
            max_message_size: None,
            max_age: None,
        }
    }
}

impl StreamSettings {
    /// The subjects the stream captures.
    pub fn subjects(&self) -> String {
        format!("{}.>", self.prefix)
    }

    fn config(&self) -> Config {
        Config {
            name: self.name.clone(),
            subjects: vec![self.subjects()],
            retention: RetentionPolicy::Limits,
            storage: self.storage,
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            max_message_size: self.max_message_size.unwrap_or(0),
            max_age: self.max_age.unwrap_or_default(),
            allow_direct: true,
            description: Some("annals events, published by a relay".to_owned()),
            ..Default::default()
        }
    }

    /// What is wrong with an existing stream's configuration for a relay, if anything.
    fn problem(&self, existing: &Config) -> Option<String> {
        let wanted = self.subjects();
        if !existing.subjects.contains(&wanted) {
            return Some(format!(
                "it captures {:?}, not `{wanted}`: give the relay another stream name or prefix",
                existing.subjects
            ));
        }
        if existing.retention != RetentionPolicy::Limits {
            return Some(format!(
                "its retention is {:?}: a relay needs Limits retention (work-queue or interest retention deletes the messages the relay looks up after a restart)",
                existing.retention
            ));
        }
        if existing.duplicate_window.is_zero() {
            return Some("it keeps no duplicate window".to_owned());
        }
        None
    }
}

fn stream_error(name: &str, problem: impl std::fmt::Display) -> Error {
    Error::Stream {
        stream: name.to_owned(),
        problem: problem.to_string(),
    }
}

/// Gets the relay's stream, creating it when missing, and checks it.
pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
    servers: &str,
) -> Result<jetstream::stream::Stream> {
    let name = &settings.name;
    match js.get_stream(name).await {
        Ok(mut stream) => {
            let info = stream
                .info()
                .await
                .map_err(|e| stream_error(name, format!("cannot read its configuration: {e}")))?;
            if let Some(problem) = settings.problem(&info.config) {
                return Err(stream_error(name, problem));
            }
            Ok(stream)
        }
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(js_error)
                if js_error.error_code() == ErrorCode::STREAM_NOT_FOUND =>
            {
                js.create_stream(settings.config())
                    .await
                    .map_err(|e| match e.kind() {
                        CreateStreamErrorKind::JetStreamUnavailable => {
                            Error::JetStreamUnavailable {
                                servers: servers.to_owned(),
                            }
                        }
                        _ => stream_error(name, format!("cannot be created: {e}")),
                    })
            }
            GetStreamErrorKind::Request => {
                // No responders: JetStream is off (or the request timed out).
                Err(Error::JetStreamUnavailable {
                    servers: servers.to_owned(),
                })
            }
            _ => Err(stream_error(name, e)),
        },
    }
}
