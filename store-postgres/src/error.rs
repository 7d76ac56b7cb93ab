use annals_core::{Error, StreamAppend};
use sqlx::postgres::PgDatabaseError;

/// The database could not be reached. Names the host, port and database, never the
/// password; for a TLS failure, says what to check.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to PostgreSQL at {target}: {cause}{}", hint(cause))]
pub struct ConnectError {
    /// `host:port/database` from the connection URL.
    pub target: String,
    cause: sqlx::Error,
}

/// What to check after a TLS failure (rustls reports a refused certificate as an I/O error
/// whose message names the certificate).
fn hint(cause: &sqlx::Error) -> &'static str {
    let message = cause.to_string();
    match cause {
        sqlx::Error::Tls(_) | sqlx::Error::Io(_) if message.contains("not valid for name") => {
            " (the server's TLS certificate does not name the host in the URL: connect by a name \
             the certificate carries. sqlx 0.8 checks the name under sslmode=verify-ca too, \
             transact-rs/sqlx#3793)"
        }
        sqlx::Error::Tls(_) | sqlx::Error::Io(_) if message.contains("certificate") => {
            " (the server's TLS certificate was refused: with sslmode=verify-ca or verify-full it \
             must be signed by the authority in sslrootcert, and verify-full also needs the host \
             name in it)"
        }
        sqlx::Error::Tls(_) => " (TLS failed: check sslmode, sslrootcert, sslcert and sslkey)",
        _ => "",
    }
}

impl ConnectError {
    pub(crate) fn new(target: String, cause: sqlx::Error) -> Self {
        Self { target, cause }
    }

    /// The driver's error (included in the message).
    pub fn cause(&self) -> &(dyn std::error::Error + 'static) {
        &self.cause
    }
}

/// Maps a sqlx error from any statement to annals' error.
pub(crate) fn from_sqlx(error: sqlx::Error) -> Error {
    if let Some(db) = error.as_database_error() {
        match db.code().as_deref() {
            // invalid JSON text, untranslatable character (\u0000 in jsonb), bad UTF-8
            Some("22P02" | "22P05" | "22021" | "AN400") => {
                return Error::InvalidInput(db.message().to_owned())
            }
            Some("23505") if db.constraint() == Some("events_event_id_key") => {
                return Error::InvalidInput(
                    "an event with this event_id is already stored".to_owned(),
                )
            }
            _ => {}
        }
    }
    Error::backend(error)
}

/// Whether a statement failed because an event id it inserts is already stored.
pub(crate) fn is_duplicate_event_id(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|db| {
        db.code().as_deref() == Some("23505") && db.constraint() == Some("events_event_id_key")
    })
}

/// Maps an append's error: a version mismatch becomes [`Error::Conflict`], a caller's
/// transaction older than a stream's last writer [`Error::StaleTransaction`].
pub(crate) fn from_append(error: sqlx::Error, appends: &[StreamAppend]) -> Error {
    let Some(db) = error
        .as_database_error()
        .and_then(|db| db.try_downcast_ref::<PgDatabaseError>())
    else {
        return from_sqlx(error);
    };
    let mapped = match db.code() {
        "AN409" => db.detail().and_then(|detail| {
            let (index, actual) = detail.split_once(':')?;
            let append = appends.get(index.parse::<usize>().ok()?.checked_sub(1)?)?;
            Some(Error::Conflict {
                stream_id: append.stream_id.clone(),
                expected: append.expected,
                actual: actual.parse().ok()?,
            })
        }),
        "AN412" => db.detail().map(|stream| Error::StaleTransaction {
            stream_id: stream.to_owned(),
        }),
        _ => None,
    };
    mapped.unwrap_or_else(|| from_sqlx(error))
}

/// Whether the connection broke under a statement, rather than the statement failing: the
/// I/O broke, or the server ended the session (class 57, operator intervention: a
/// terminated backend, a server shutting down; class 08, connection exception).
pub(crate) fn connection_broke(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("57") || code.starts_with("08")),
        _ => false,
    }
}

/// Whether `error` says the connection was lost (or handed out dead by the pool): see
/// [`connection_broke`].
pub(crate) fn lost_connection(error: &Error) -> bool {
    matches!(error, Error::Backend(cause)
        if cause.downcast_ref::<sqlx::Error>().is_some_and(connection_broke))
}
