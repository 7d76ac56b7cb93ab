//! A second service: `statements` keeps its own `account_balances`, fed from NATS
//! JetStream through an inbox consumer instead of from the log, with the same projection
//! code. It lives in the schema `statements` (standing for another service's database):
//! its annals tables (inbox, dead letters) and its read table both go there.

use annals_core::Envelope;
use annals_nats::{InboxConsumer, InboxOptions, NatsOptions};
use annals_projections::{
    FailurePolicy, HandlerError, PgCheckpoints, PgTx, Projection, RetryPolicy,
};
use annals_store_postgres::{PgEventStore, PgStoreOptions};

use crate::{
    balances::{account_id, AccountBalances},
    AccountEvent,
};

/// The service's schema, and its consumer's name.
pub const SERVICE: &str = "statements";

/// `AccountBalances`, with a test knob: `BANK_STATEMENTS_REFUSE=<account id>` makes the
/// handler fail on that account's events (a poison message that a fix and a retry clear).
#[derive(Clone, Debug, Default)]
pub struct Statements {
    balances: AccountBalances,
    refuse: Option<String>,
}

impl Statements {
    /// The read model, with the knob read from the environment.
    pub fn from_env() -> Self {
        Self {
            balances: AccountBalances::default(),
            refuse: std::env::var("BANK_STATEMENTS_REFUSE")
                .ok()
                .filter(|v| !v.is_empty()),
        }
    }

    fn check(&self, events: &[Envelope<AccountEvent>]) -> Result<(), HandlerError> {
        match &self.refuse {
            Some(refused) if events.iter().any(|e| account_id(&e.stream_id) == refused) => {
                Err(format!("statements refuse account {refused} (BANK_STATEMENTS_REFUSE)").into())
            }
            _ => Ok(()),
        }
    }
}

impl Projection<PgCheckpoints> for Statements {
    type Event = AccountEvent;

    fn name(&self) -> &str {
        SERVICE
    }

    fn tables(&self) -> Vec<String> {
        <AccountBalances as Projection<PgCheckpoints>>::tables(&self.balances)
    }

    async fn setup(&self, tx: &mut PgTx) -> Result<(), HandlerError> {
        <AccountBalances as Projection<PgCheckpoints>>::setup(&self.balances, tx).await
    }

    async fn handle(
        &self,
        event: &Envelope<AccountEvent>,
        tx: &mut PgTx,
    ) -> Result<(), HandlerError> {
        self.handle_batch(std::slice::from_ref(event), tx).await
    }

    async fn handle_batch(
        &self,
        events: &[Envelope<AccountEvent>],
        tx: &mut PgTx,
    ) -> Result<(), HandlerError> {
        self.check(events)?;
        <AccountBalances as Projection<PgCheckpoints>>::handle_batch(&self.balances, events, tx)
            .await
    }
}

/// The service's store: schema `statements` in the database at `url`, its connections'
/// search path set to it, so the unqualified `account_balances` of the projection is the
/// service's own table.
///
/// # Errors
///
/// When the database cannot be reached.
pub async fn connect(url: &str) -> annals_core::Result<PgEventStore> {
    let joiner = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{joiner}options=-c%20search_path%3D{SERVICE}");
    PgEventStore::connect_with(&url, PgStoreOptions::new().schema(SERVICE)).await
}

/// The consumer: account events from the `ANNALS` stream, parked behind a dead letter after
/// three failed deliveries. `BANK_STATEMENTS_ACK_WAIT_MS` shortens JetStream's redelivery
/// wait (for tests that kill the service).
pub fn consumer(nats: NatsOptions) -> InboxConsumer<Statements> {
    let mut options = InboxOptions::new()
        .filter_subject("annals.account.>")
        .on_failure(FailurePolicy::Park)
        .retry(RetryPolicy {
            attempts: 3,
            backoff: std::time::Duration::from_millis(200),
            max_backoff: std::time::Duration::from_secs(2),
        });
    if let Some(ms) = std::env::var("BANK_STATEMENTS_ACK_WAIT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        options = options.ack_wait(std::time::Duration::from_millis(ms));
    }
    InboxConsumer::new(SERVICE, nats, options, Statements::from_env())
}
