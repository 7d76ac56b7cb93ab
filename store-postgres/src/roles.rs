//! An application role that can append and read but cannot rewrite the log.

use annals_core::{Error, Result};

use crate::{error::from_sqlx, store::quoted_identifier, PgEventStore};

/// The columns an append supplies. The others (`global_position`, `transaction_id`,
/// `recorded_at`) always take their defaults: an application role can neither backdate an
/// event nor forge its place in the log.
const EVENT_INSERT_COLUMNS: &str = "event_id, stream_id, stream_version, event_type, \
                                    schema_version, metadata, payload, payload_bin";

/// What the application role may do on each annals table besides reading it. Every table the
/// migrations create is listed (a test checks it), so a new table cannot be forgotten.
pub(crate) const TABLE_PRIVILEGES: &[(&str, &str)] = &[
    // Appends: new events only, never UPDATE, DELETE or TRUNCATE.
    ("events", "INSERT (EVENT_COLUMNS)"),
    // Appends create and bump a stream's head; nothing deletes one.
    ("stream_heads", "INSERT, UPDATE"),
    // A cache: the repository writes and replaces snapshots.
    ("snapshots", "INSERT, UPDATE, DELETE"),
    // Subscriptions (projections, relays): their checkpoints and dead letters.
    ("checkpoints", "INSERT, UPDATE, DELETE"),
    ("dead_letters", "INSERT, UPDATE, DELETE"),
    // Inbox consumers: what they applied (purged by age) and each stream's last version.
    ("inbox", "INSERT, DELETE"),
    ("inbox_streams", "INSERT, UPDATE"),
    // Process managers: their timers (set, claimed, fired) and open instances.
    ("process_timers", "INSERT, UPDATE"),
    ("process_instances", "INSERT, UPDATE"),
    // sqlx's migration bookkeeping: read only (migrate needs the owner).
    ("_sqlx_migrations", ""),
];

/// Checks a role name the same way as a schema name, and quotes it.
fn quoted_role(role: &str) -> Result<String> {
    quoted_identifier("role", role, 63)
}

impl PgEventStore {
    /// Gives `role` what an application needs on the store's schema, and no more: it may
    /// read everything and append events, but not UPDATE, DELETE or TRUNCATE them, and it
    /// may INSERT only the columns an append supplies, so `global_position`,
    /// `transaction_id` and `recorded_at` always take their defaults. Stream heads,
    /// snapshots, checkpoints and dead letters stay writable (appends and subscriptions
    /// need them). Creates `role` (`NOLOGIN`, a group role) when it does not exist; grant it
    /// to the login role your services use (`GRANT annals_app TO orders_service`).
    ///
    /// Run it as the owner of the schema (the role that runs [`migrate`](Self::migrate)),
    /// after every `migrate`: it replaces the role's privileges on the schema's tables
    /// with exactly these, so it is idempotent. What stays with the owner: `migrate`, and
    /// this call. Read models belong to whoever creates them: give the application role
    /// `CREATE` on their schema to let projections create their tables, and note that a
    /// shadow rebuild also needs `CREATE` on the database (its shadow schema) and ownership
    /// of the read-model tables it swaps, and a reset `TRUNCATE` on them.
    ///
    /// ```no_run
    /// # async fn demo(owner: annals_store_postgres::PgEventStore) -> annals_core::Result<()> {
    /// owner.migrate().await?;
    /// owner.grant_app_role("annals_app").await?;
    /// // services connect as a login role that is a member of annals_app
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a role name that is not a plain lowercase identifier;
    /// [`Error::Backend`] when the connected role may not create roles or grant on the
    /// schema (it must own the schema, and have `CREATEROLE` if `role` is new).
    #[tracing::instrument(name = "annals.grant_app_role", skip_all, fields(schema = %self.schema(), role))]
    pub async fn grant_app_role(&self, role: &str) -> Result<()> {
        let quoted = quoted_role(role)?;
        let schema = &self.inner.quoted_schema;
        let mut tx = self.pool().begin().await.map_err(from_sqlx)?;
        // A GRANT by a role without the right only warns ("no privileges were granted"):
        // check ownership first, so that running this as the wrong role fails loudly.
        let owner: Option<bool> = sqlx::query_scalar(
            "SELECT pg_has_role(current_user, nspowner, 'USAGE') FROM pg_namespace WHERE nspname = $1",
        )
        .bind(self.schema())
        .fetch_optional(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        match owner {
            Some(true) => {}
            Some(false) => {
                return Err(Error::backend(format!(
                    "grant_app_role({role}): the connected role does not own the schema {}; run \
                     it as the owner (the role that runs migrate)",
                    self.schema()
                )))
            }
            None => {
                return Err(Error::backend(format!(
                    "grant_app_role({role}): the schema {} does not exist; run migrate first",
                    self.schema()
                )))
            }
        }
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                .bind(role)
                .fetch_one(&mut *tx)
                .await
                .map_err(from_sqlx)?;
        let mut statements = Vec::new();
        if !exists {
            statements.push(format!("CREATE ROLE {quoted} NOLOGIN"));
        }
        statements.push(format!("GRANT USAGE ON SCHEMA {schema} TO {quoted}"));
        // Revoking on a table also revokes its column privileges: start from nothing.
        statements.push(format!(
            "REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {quoted}"
        ));
        for (table, privileges) in TABLE_PRIVILEGES {
            statements.push(format!("GRANT SELECT ON {schema}.{table} TO {quoted}"));
            if !privileges.is_empty() {
                let privileges = privileges.replace("EVENT_COLUMNS", EVENT_INSERT_COLUMNS);
                statements.push(format!(
                    "GRANT {privileges} ON {schema}.{table} TO {quoted}"
                ));
            }
        }
        for statement in &statements {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(|e| match e.as_database_error().and_then(|d| d.code()) {
                    Some(code) if code == "42501" => Error::backend(format!(
                        "granting {role} on schema {}: permission denied ({statement}): run \
                         this as the schema's owner, with CREATEROLE for a new role",
                        self.schema()
                    )),
                    _ => from_sqlx(e),
                })?;
        }
        tx.commit().await.map_err(from_sqlx)
    }
}

#[cfg(test)]
mod tests {
    use super::quoted_role;

    #[test]
    fn role_names_are_plain_identifiers() {
        assert_eq!(quoted_role("annals_app").unwrap(), "\"annals_app\"");
        for bad in ["", "App", "a-b", "a\"b", "pg_read", "a b", &"a".repeat(64)] {
            assert!(quoted_role(bad).is_err(), "{bad:?} accepted");
        }
    }
}
