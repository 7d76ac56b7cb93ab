//! The compatibility rules, one change at a time: v1 of an event, then the code as it would
//! be after the change.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{DomainEvent, EventCatalog, Upcasters};

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Address {
    city: String,
}

mod v1 {
    use super::*;
    #[derive(Debug, Serialize, Deserialize, JsonSchema)]
    pub(super) enum Ev {
        #[serde(rename = "paid")]
        Paid {
            amount: i64,
            note: Option<String>,
            to: Address,
        },
        #[serde(rename = "closed")]
        Closed,
    }
    impl DomainEvent for Ev {}
}

/// A check of one version of the code against v1's file.
type Check = fn(u32, Upcasters) -> Result<(), Vec<String>>;

/// Checks `E`'s schemas (at `version` for `paid`, with `upcasters`) against v1's file.
fn check<E: DomainEvent + JsonSchema>(
    version: u32,
    upcasters: Upcasters,
) -> Result<(), Vec<String>> {
    let recorded = EventCatalog::new().with_schema::<v1::Ev>().schema_file();
    EventCatalog::new()
        .with_schema::<E>()
        .schema_version("paid", version)
        .with_upcasters(upcasters)
        .check_schema_file(&recorded)
        .map_err(|changes| changes.iter().map(ToString::to_string).collect())
}

macro_rules! event {
    ($($field:ident : $ty:ty),* $(,)?) => {{
        #[derive(Debug, Serialize, Deserialize, JsonSchema)]
        enum Ev {
            #[serde(rename = "paid")]
            Paid { $($field: $ty),* },
            #[serde(rename = "closed")]
            Closed,
        }
        impl DomainEvent for Ev {}
        check::<Ev>
    }};
}

#[test]
fn the_same_schema_and_an_added_optional_field_pass() {
    assert_eq!(
        event!(amount: i64, note: Option<String>, to: Address)(1, Upcasters::new()),
        Ok(())
    );
    let added = event!(amount: i64, note: Option<String>, to: Address, memo: Option<String>);
    assert_eq!(added(1, Upcasters::new()), Ok(()));
}

#[test]
fn removing_renaming_retyping_or_requiring_a_field_fails_naming_it() {
    let cases: [(Check, &str); 5] = [
        (
            event!(note: Option<String>, to: Address),
            "paid: field `amount` was removed",
        ),
        (
            event!(sum: i64, note: Option<String>, to: Address),
            "paid: field `amount` was removed",
        ),
        (
            event!(amount: String, note: Option<String>, to: Address),
            "paid: field `amount` changed type from integer to string",
        ),
        (
            event!(amount: i64, note: String, to: Address),
            "paid: field `note` became required",
        ),
        (
            event!(amount: i64, note: Option<String>, to: Address, memo: String),
            "paid: field `memo` was added as required",
        ),
    ];
    for (check, expected) in cases {
        let changes = check(1, Upcasters::new()).expect_err(expected);
        assert!(
            changes.iter().any(|c| c.starts_with(expected)),
            "{expected}: {changes:?}"
        );
    }
}

#[test]
fn a_nested_field_change_is_named_by_its_path() {
    #[derive(Debug, Serialize, Deserialize, JsonSchema)]
    struct Moved {
        town: String,
    }
    let changes = event!(amount: i64, note: Option<String>, to: Moved)(1, Upcasters::new())
        .expect_err("a nested rename");
    assert!(
        changes
            .iter()
            .any(|c| c.contains("field `to.city` was removed")),
        "{changes:?}"
    );
}

#[test]
fn a_breaking_change_passes_only_with_a_version_bump_and_an_upcaster() {
    let breaking = event!(amount: String, note: Option<String>, to: Address);
    let without = breaking(2, Upcasters::new()).expect_err("no upcaster");
    assert!(
        without[0].contains("without an upcaster from 1"),
        "{without:?}"
    );
    let upcasters = Upcasters::new().json("paid", 1, Ok);
    assert_eq!(breaking(2, upcasters), Ok(()));
}

#[test]
fn a_removed_event_type_fails() {
    #[derive(Debug, Serialize, Deserialize, JsonSchema)]
    enum Ev {
        #[serde(rename = "paid")]
        Paid {
            amount: i64,
            note: Option<String>,
            to: Address,
        },
    }
    impl DomainEvent for Ev {}
    let changes = check::<Ev>(1, Upcasters::new()).expect_err("closed is gone");
    assert!(
        changes.iter().any(|c| c.starts_with("closed: was removed")),
        "{changes:?}"
    );
}
