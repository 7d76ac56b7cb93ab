//! Customers: state stored in an ordinary table (no event sourcing), with an event
//! announcing each change appended in the same transaction. The annals log is the outbox:
//! the row and the event commit together or not at all, and a relay publishes the event.

use annals_core::{
    encode_event, AppendResult, DomainEvent, Encoding, ExpectedVersion, StreamAppend,
};
use annals_store_postgres::PgEventStore;
use anyhow::Context;
use serde::{Deserialize, Serialize};

/// What happened to a customer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum CustomerEvent {
    /// A customer was registered.
    #[serde(rename = "customer-registered")]
    Registered {
        /// Their name.
        name: String,
        /// Where to write to them.
        email: String,
    },
}

impl DomainEvent for CustomerEvent {}

/// Creates the `bank_customers` table if it is missing.
///
/// # Errors
///
/// Database errors.
pub async fn setup(store: &PgEventStore) -> anyhow::Result<()> {
    sqlx::query(include_str!("customers/create.sql"))
        .execute(store.pool())
        .await
        .context("creating bank_customers")?;
    Ok(())
}

/// Registers a customer: the `bank_customers` row and the `customer-registered` event, in
/// one transaction. Returns where the event landed in the log.
///
/// # Errors
///
/// Database errors (nothing is written then), or a customer already registered.
pub async fn register(
    store: &PgEventStore,
    id: &str,
    name: &str,
    email: &str,
) -> anyhow::Result<AppendResult> {
    let event = encode_event(
        &CustomerEvent::Registered {
            name: name.to_owned(),
            email: email.to_owned(),
        },
        Encoding::Json,
    )?;
    let mut tx = store.pool().begin().await?;
    sqlx::query(include_str!("customers/insert.sql"))
        .bind(id)
        .bind(name)
        .bind(email)
        .execute(&mut *tx)
        .await
        .with_context(|| format!("inserting customer {id}"))?;
    let appended = store
        .append_in(
            &mut tx,
            vec![StreamAppend::new(
                format!("customer-{id}"),
                ExpectedVersion::NoStream,
                vec![event],
            )],
        )
        .await
        .with_context(|| format!("appending customer-registered for {id}"))?;
    tx.commit().await.context("committing the registration")?;
    Ok(appended)
}

/// The customers with these ids: (id, name, email).
///
/// # Errors
///
/// Database errors.
pub async fn rows(
    store: &PgEventStore,
    ids: &[&str],
) -> anyhow::Result<Vec<(String, String, String)>> {
    Ok(sqlx::query_as(include_str!("customers/select.sql"))
        .bind(ids)
        .fetch_all(store.pool())
        .await?)
}
