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
        .with::<AccountEvent>()
        .with::<customers::CustomerEvent>()
        .with::<transfer::RequestEvent>()
        .with::<transfer::TransferEvent>()
}
