//! Test support (feature `testkit`): a given/when/then [`TestHarness`] for aggregates and
//! the [`conformance`] suite every store runs against itself.

pub mod conformance;
mod harness;

pub use harness::{Outcome, TestHarness};
