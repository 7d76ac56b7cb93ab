//! The annals bank example: a `BankAccount` aggregate, and a scenario that runs it.
//!
//! Run with: `cargo run -p bank` (in-memory store).

mod account;
pub mod balances;
pub mod customers;
pub mod metrics;
mod scenario;
mod simulate;
pub mod statements;
pub mod transfer;

pub use account::{AccountCommand, AccountEvent, AccountStatus, BankAccount, BankError, Cents};
pub use scenario::{print_balances, run_scenario};
pub use simulate::simulate;

/// Every event type the bank writes and reads: what `bank verify` checks stored history
/// against.
pub fn catalog() -> annals_core::EventCatalog {
    annals_core::EventCatalog::new()
        .with_schema::<AccountEvent>()
        .with_schema::<customers::CustomerEvent>()
        .with_schema::<transfer::RequestEvent>()
        .with_schema::<transfer::TransferEvent>()
}

/// The committed schemas of the bank's events (see [`catalog`]): CI checks the code
/// against it.
pub const SCHEMA_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas.json");

#[cfg(test)]
mod schema_tests {
    /// The code's event schemas are compatible with the committed file
    /// (`ANNALS_WRITE_SCHEMAS=1 cargo test -p bank` rewrites it after a compatible change).
    #[test]
    fn the_event_schemas_match_the_committed_file() {
        annals_core::testkit::check_schema_file(&super::catalog(), super::SCHEMA_FILE);
    }
}
