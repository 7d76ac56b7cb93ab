//! Connecting to NATS: servers, credentials, TLS; from code or from the environment.

use std::{path::PathBuf, time::Duration};

use async_nats::{ConnectErrorKind, ConnectOptions};

use crate::{Error, Result, Secret};

/// How annals authenticates to NATS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// A user and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: Secret,
    },
    /// A token.
    Token(Secret),
    /// An NKey seed (`SU...`): the server knows the matching public key.
    NKey(Secret),
    /// A `.creds` file (a user JWT and its NKey seed, for operator mode).
    CredsFile(PathBuf),
}

/// Where annals' NATS connections go and how they authenticate.
///
/// ```
/// use annals_nats::{NatsOptions, Secret};
///
/// let options = NatsOptions::new("tls://nats.internal:4222")
///     .user_password("relay", Secret::new("s3cret"))
///     .tls_root_cert("/etc/annals/nats-ca.pem");
/// assert_eq!(options.servers_display(), "tls://nats.internal:4222");
/// // Credentials never show up:
/// assert!(!format!("{options:?}").contains("s3cret"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsOptions {
    servers: Vec<String>,
    auth: NatsAuth,
    require_tls: bool,
    root_cert: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
    name: String,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self::new("nats://127.0.0.1:4222")
    }
}

/// Reads a secret from `VAR`, or from the file named by `VAR_FILE` (trailing newline
/// trimmed): secrets stay off command lines.
fn secret_from_env(var: &str) -> Result<Option<Secret>> {
    if let Ok(value) = std::env::var(var) {
        return Ok(Some(Secret::new(value)));
    }
    let file_var = format!("{var}_FILE");
    match std::env::var(&file_var) {
        Ok(path) => std::fs::read_to_string(&path)
            .map(|s| Some(Secret::new(s.trim_end_matches(['\r', '\n']))))
            .map_err(|e| Error::Config(format!("{file_var}: cannot read {path}: {e}"))),
        Err(_) => Ok(None),
    }
}

/// Splits `user:password@` (or `token@`) off a server URL: async-nats ignores credentials in
/// URLs, and they must never be displayed.
fn split_userinfo(url: &str) -> (String, Option<(String, Option<String>)>) {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return (url.to_owned(), None);
    };
    let address = match scheme {
        Some(scheme) => format!("{scheme}://{host}"),
        None => host.to_owned(),
    };
    let credentials = match userinfo.split_once(':') {
        Some((user, password)) => (user.to_owned(), Some(password.to_owned())),
        None => (userinfo.to_owned(), None),
    };
    (address, Some(credentials))
}

impl NatsOptions {
    /// One server, or several separated by commas (`nats://a:4222,nats://b:4222`). Use
    /// `tls://` to require TLS. Credentials in the URL (`nats://user:pass@host`) are used
    /// when no other credentials are set, and never displayed.
    pub fn new(servers: impl AsRef<str>) -> Self {
        let mut auth = NatsAuth::None;
        let servers = servers
            .as_ref()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                let (address, credentials) = split_userinfo(s);
                if let (NatsAuth::None, Some((user, password))) = (&auth, credentials) {
                    auth = match password {
                        Some(password) => NatsAuth::UserPassword {
                            user,
                            password: Secret::new(password),
                        },
                        None => NatsAuth::Token(Secret::new(user)),
                    };
                }
                address
            })
            .collect();
        Self {
            servers,
            auth,
            require_tls: false,
            root_cert: None,
            client_cert: None,
            name: "annals".to_owned(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }

    /// Replaces the servers (one, or several separated by commas), keeping the
    /// credentials and TLS settings; credentials in a URL are used when none are set.
    #[must_use]
    pub fn with_servers(self, servers: impl AsRef<str>) -> Self {
        let parsed = Self::new(servers);
        let auth = match self.auth {
            NatsAuth::None => parsed.auth,
            auth => auth,
        };
        Self {
            servers: parsed.servers,
            auth,
            ..self
        }
    }

    /// Options from the environment: `NATS_URL` (default `nats://127.0.0.1:4222`); one of
    /// `NATS_USER` with `NATS_PASSWORD`, `NATS_TOKEN`, `NATS_NKEY_SEED` or `NATS_CREDS` (a
    /// `.creds` file); each secret also as a file named by `<VAR>_FILE`; TLS with `NATS_CA`,
    /// `NATS_CERT` and `NATS_KEY` (files) and `NATS_TLS_REQUIRED=1`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a secret file that cannot be read, or a user without a
    /// password.
    pub fn from_env() -> Result<Self> {
        let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let mut options = Self::new(url);
        if let Ok(user) = std::env::var("NATS_USER") {
            let password = secret_from_env("NATS_PASSWORD")?.ok_or_else(|| {
                Error::Config(
                    "NATS_USER is set but neither NATS_PASSWORD nor NATS_PASSWORD_FILE".into(),
                )
            })?;
            options = options.user_password(user, password);
        } else if let Some(token) = secret_from_env("NATS_TOKEN")? {
            options = options.token(token);
        } else if let Some(seed) = secret_from_env("NATS_NKEY_SEED")? {
            options = options.nkey_seed(seed);
        } else if let Ok(creds) = std::env::var("NATS_CREDS") {
            options = options.creds_file(creds);
        }
        if let Ok(ca) = std::env::var("NATS_CA") {
            options = options.tls_root_cert(ca);
        }
        match (std::env::var("NATS_CERT"), std::env::var("NATS_KEY")) {
            (Ok(cert), Ok(key)) => options = options.tls_client_cert(cert, key),
            (Err(_), Err(_)) => {}
            _ => return Err(Error::Config("NATS_CERT and NATS_KEY go together".into())),
        }
        if std::env::var("NATS_TLS_REQUIRED").is_ok_and(|v| v == "1" || v == "true") {
            options = options.require_tls(true);
        }
        Ok(options)
    }

    /// Authenticates with a user and password.
    #[must_use]
    pub fn user_password(mut self, user: impl Into<String>, password: impl Into<Secret>) -> Self {
        self.auth = NatsAuth::UserPassword {
            user: user.into(),
            password: password.into(),
        };
        self
    }

    /// Authenticates with a token.
    #[must_use]
    pub fn token(mut self, token: impl Into<Secret>) -> Self {
        self.auth = NatsAuth::Token(token.into());
        self
    }

    /// Authenticates with an NKey seed (`SU...`).
    #[must_use]
    pub fn nkey_seed(mut self, seed: impl Into<Secret>) -> Self {
        self.auth = NatsAuth::NKey(seed.into());
        self
    }

    /// Authenticates with a `.creds` file.
    #[must_use]
    pub fn creds_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.auth = NatsAuth::CredsFile(path.into());
        self
    }

    /// Trusts this certificate authority (a PEM file) for the server's certificate, instead
    /// of the system's roots; implies TLS.
    #[must_use]
    pub fn tls_root_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.root_cert = Some(path.into());
        self.require_tls = true;
        self
    }

    /// Presents this client certificate and key (PEM files) to servers that verify clients;
    /// implies TLS.
    #[must_use]
    pub fn tls_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some((cert.into(), key.into()));
        self.require_tls = true;
        self
    }

    /// Refuses to connect without TLS.
    #[must_use]
    pub fn require_tls(mut self, required: bool) -> Self {
        self.require_tls = required;
        self
    }

    /// The client name the server shows in its connection list.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How long the first connection may take (default 5 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a JetStream request or a publish acknowledgement may take (default 10 s).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The credentials in use.
    pub fn auth(&self) -> &NatsAuth {
        &self.auth
    }

    /// The servers, without credentials, for messages.
    pub fn servers_display(&self) -> String {
        self.servers.join(",")
    }

    pub(crate) fn request_timeout_value(&self) -> Duration {
        self.request_timeout
    }

    /// Connects. The client reconnects by itself after the first connection (forever,
    /// with backoff); requests in flight when a connection drops time out.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Unauthorized`], [`Error::Tls`] for an untrusted
    /// certificate, [`Error::Config`] for unreadable files or a malformed seed.
    pub async fn connect(&self) -> Result<async_nats::Client> {
        let servers = self.servers_display();
        if self.servers.is_empty() {
            return Err(Error::Config("no NATS server given".into()));
        }
        // The client reports an unreadable TLS file as a bare I/O error: name it here.
        let files =
            self.root_cert
                .iter()
                .map(|f| ("TLS CA", f))
                .chain(self.client_cert.iter().flat_map(|(cert, key)| {
                    [("TLS client certificate", cert), ("TLS client key", key)]
                }));
        for (what, file) in files {
            if let Err(e) = std::fs::File::open(file) {
                return Err(Error::Config(format!(
                    "cannot read the {what} file {}: {e}",
                    file.display()
                )));
            }
        }
        let mut connect = match &self.auth {
            NatsAuth::None => ConnectOptions::new(),
            NatsAuth::UserPassword { user, password } => {
                ConnectOptions::with_user_and_password(user.clone(), password.expose().to_owned())
            }
            NatsAuth::Token(token) => ConnectOptions::with_token(token.expose().to_owned()),
            NatsAuth::NKey(seed) => ConnectOptions::with_nkey(seed.expose().to_owned()),
            NatsAuth::CredsFile(path) => ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| {
                    Error::Config(format!(
                        "cannot read the .creds file {}: {e}",
                        path.display()
                    ))
                })?,
        };
        if let Some(root) = &self.root_cert {
            connect = connect.add_root_certificates(root.clone());
        }
        if let Some((cert, key)) = &self.client_cert {
            connect = connect.add_client_certificate(cert.clone(), key.clone());
        }
        let client = connect
            .require_tls(self.require_tls)
            .name(&self.name)
            .connection_timeout(self.connect_timeout)
            .request_timeout(Some(self.request_timeout))
            .connect(self.servers.clone())
            .await
            .map_err(|e| connect_error(&servers, &e))?;
        Ok(client)
    }
}

/// The rustls error behind a failed connection, if TLS is why (rustls reports an untrusted
/// certificate as an I/O error wrapping its own).
fn tls_failure(error: &async_nats::ConnectError) -> Option<String> {
    use std::error::Error as _;
    let io = error.source()?.downcast_ref::<std::io::Error>()?;
    let rustls = io.get_ref()?.downcast_ref::<async_nats::rustls::Error>()?;
    Some(rustls.to_string())
}

fn connect_error(servers: &str, error: &async_nats::ConnectError) -> Error {
    let servers = servers.to_owned();
    match error.kind() {
        ConnectErrorKind::AuthorizationViolation => Error::Unauthorized { servers },
        ConnectErrorKind::Authentication => Error::Config(format!(
            "the NKey seed or .creds cannot sign the server's challenge: {error}"
        )),
        ConnectErrorKind::Tls => Error::Tls {
            servers,
            reason: error.to_string(),
        },
        _ => match tls_failure(error) {
            Some(reason) => Error::Tls { servers, reason },
            None => Error::Unreachable {
                servers,
                reason: error.to_string(),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The only test in this crate's unit tests that touches the environment.
    #[test]
    fn from_env_reads_servers_credentials_and_tls_files() {
        let dir = std::env::temp_dir().join(format!("annals-env-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("dir");
        let seed_file = dir.join("seed");
        std::fs::write(&seed_file, "SUseed-from-a-file\n").expect("seed");
        let vars = [
            ("NATS_URL", "tls://user:pw@a:4222,tls://b:4222"),
            ("NATS_NKEY_SEED_FILE", seed_file.to_str().expect("utf-8")),
            ("NATS_CA", "/etc/annals/ca.pem"),
            ("NATS_CERT", "/etc/annals/client.pem"),
            ("NATS_KEY", "/etc/annals/client-key.pem"),
        ];
        for (k, v) in vars {
            std::env::set_var(k, v);
        }
        let options = NatsOptions::from_env();
        let half = {
            std::env::remove_var("NATS_KEY");
            NatsOptions::from_env()
        };
        for (k, _) in vars {
            std::env::remove_var(k);
        }
        let _ = std::fs::remove_dir_all(&dir);

        let options = options.expect("options from the environment");
        assert_eq!(options.servers_display(), "tls://a:4222,tls://b:4222");
        assert_eq!(
            options.auth(),
            &NatsAuth::NKey(Secret::new("SUseed-from-a-file"))
        );
        assert_eq!(
            options.root_cert.as_deref(),
            Some(Path::new("/etc/annals/ca.pem"))
        );
        assert_eq!(
            options.client_cert,
            Some((
                PathBuf::from("/etc/annals/client.pem"),
                PathBuf::from("/etc/annals/client-key.pem")
            ))
        );
        assert!(options.require_tls);
        assert!(!format!("{options:?}").contains("SUseed"));
        assert!(matches!(half, Err(Error::Config(m)) if m.contains("NATS_KEY")));
    }
}
