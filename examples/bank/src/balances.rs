//! The `account_balances` read model: one row per account, kept by a projection on either
//! store.

use annals_core::Envelope;
use annals_projections::{
    HandlerError, MemoryCheckpoints, MemoryTx, PgCheckpoints, PgTx, Projection,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Executor, Row};

use crate::{AccountEvent, Cents};

/// The read table's name (in memory and in Postgres).
pub const TABLE: &str = "account_balances";

/// One account as the read side shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceRow {
    /// Account holder.
    pub owner: String,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Balance in cents.
    pub balance: Cents,
    /// `open` or `closed`.
    pub status: String,
    /// When the last event was recorded.
    pub last_activity: Option<DateTime<Utc>>,
    /// How many events were applied to this row (each exactly once).
    pub events_applied: i64,
}

impl BalanceRow {
    /// Folds one event into the row.
    pub fn apply(&mut self, event: &Envelope<AccountEvent>) {
        self.apply_with(event, false);
    }

    fn apply_with(&mut self, event: &Envelope<AccountEvent>, bug: bool) {
        match &event.payload {
            AccountEvent::Opened { owner, currency } => {
                self.owner.clone_from(owner);
                self.currency.clone_from(currency);
                self.status = "open".to_owned();
            }
            AccountEvent::Deposited { amount } => {
                self.balance += if bug { 2 * amount } else { *amount };
            }
            AccountEvent::Closed => self.status = "closed".to_owned(),
            other => self.balance += other.balance_change(),
        }
        self.last_activity = Some(event.recorded_at);
        self.events_applied += 1;
    }
}

/// The account id of an account stream (`account-<id>`).
pub fn account_id(stream_id: &str) -> &str {
    stream_id.strip_prefix("account-").unwrap_or(stream_id)
}

/// Keeps `account_balances` current.
#[derive(Clone, Copy, Debug, Default)]
pub struct AccountBalances {
    /// A deliberate bug for the rebuild demo and tests: deposits count twice.
    pub bug: bool,
    /// Test knob: sleep this long per batch (to interrupt a rebuild mid-way).
    pub slow: Option<std::time::Duration>,
}

impl AccountBalances {
    /// The projection, with the test-only knobs `BANK_BALANCES_BUG=1` (deposits count
    /// twice) and `BANK_BALANCES_SLOW_MS=n` (sleep per batch) read from the environment.
    pub fn from_env() -> Self {
        Self {
            bug: std::env::var("BANK_BALANCES_BUG").is_ok_and(|v| v == "1"),
            slow: std::env::var("BANK_BALANCES_SLOW_MS")
                .ok()
                .and_then(|ms| ms.parse().ok())
                .map(std::time::Duration::from_millis),
        }
    }
}

impl Projection<MemoryCheckpoints> for AccountBalances {
    type Event = AccountEvent;

    fn name(&self) -> &str {
        TABLE
    }

    fn tables(&self) -> Vec<String> {
        vec![TABLE.to_owned()]
    }

    async fn handle(
        &self,
        event: &Envelope<AccountEvent>,
        tx: &mut MemoryTx,
    ) -> Result<(), HandlerError> {
        let id = account_id(&event.stream_id);
        let mut row: BalanceRow = tx.get(TABLE, id)?.unwrap_or_default();
        row.apply_with(event, self.bug);
        tx.put(TABLE, id, &row)?;
        Ok(())
    }
}

impl Projection<PgCheckpoints> for AccountBalances {
    type Event = AccountEvent;

    fn name(&self) -> &str {
        TABLE
    }

    fn tables(&self) -> Vec<String> {
        vec![TABLE.to_owned()]
    }

    async fn setup(&self, tx: &mut PgTx) -> Result<(), HandlerError> {
        tx.execute(include_str!("balances/create.sql")).await?;
        Ok(())
    }

    async fn handle(
        &self,
        event: &Envelope<AccountEvent>,
        tx: &mut PgTx,
    ) -> Result<(), HandlerError> {
        <Self as Projection<PgCheckpoints>>::handle_batch(self, std::slice::from_ref(event), tx)
            .await
    }

    /// Reads the batch's accounts once, folds in Rust, upserts them in one statement.
    async fn handle_batch(
        &self,
        events: &[Envelope<AccountEvent>],
        tx: &mut PgTx,
    ) -> Result<(), HandlerError> {
        let ids: Vec<&str> = events.iter().map(|e| account_id(&e.stream_id)).collect();
        let mut rows = sqlx::query(include_str!("balances/select.sql"))
            .bind(&ids)
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(balance_row)
            .collect::<sqlx::Result<std::collections::BTreeMap<_, _>>>()?;
        for event in events {
            rows.entry(account_id(&event.stream_id).to_owned())
                .or_default()
                .apply_with(event, self.bug);
        }
        if let Some(slow) = self.slow {
            tokio::time::sleep(slow).await;
        }
        let (ids, rows): (Vec<String>, Vec<BalanceRow>) = rows.into_iter().unzip();
        sqlx::query(include_str!("balances/upsert.sql"))
            .bind(&ids)
            .bind(rows.iter().map(|r| r.owner.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.currency.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.balance).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.last_activity).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.events_applied).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// The Postgres rows of these accounts.
///
/// # Errors
///
/// Database errors.
pub async fn pg_rows(
    pool: &sqlx::PgPool,
    accounts: &[&str],
) -> sqlx::Result<Vec<(String, BalanceRow)>> {
    let rows = sqlx::query(include_str!("balances/select.sql"))
        .bind(accounts)
        .fetch_all(pool)
        .await?;
    rows.iter().map(balance_row).collect()
}

/// Decodes one `account_balances` row (see `balances/select.sql`).
fn balance_row(row: &sqlx::postgres::PgRow) -> sqlx::Result<(String, BalanceRow)> {
    Ok((
        row.try_get("account_id")?,
        BalanceRow {
            owner: row.try_get("owner")?,
            currency: row.try_get("currency")?,
            balance: row.try_get("balance")?,
            status: row.try_get("status")?,
            last_activity: row.try_get("last_activity")?,
            events_applied: row.try_get("events_applied")?,
        },
    ))
}

#[cfg(test)]
mod tests;
