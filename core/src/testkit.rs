//! Test support (feature `testkit`): a given/when/then [`TestHarness`] for aggregates and
//! the [`conformance`] suite every store runs against itself.

pub mod conformance;
mod harness;

pub use harness::{Outcome, TestHarness};

/// Checks an application's event schemas against its committed schema file (feature
/// `schema`): panics listing every incompatible change (event type, field, change). With
/// `ANNALS_WRITE_SCHEMAS=1` in the environment it writes the file instead (after a
/// compatible change, or a bump with its upcaster); a missing file is written and the
/// check fails once, so that it gets committed.
///
/// # Panics
///
/// On an incompatible change, or when the file cannot be read or written.
#[cfg(feature = "schema")]
pub fn check_schema_file(catalog: &crate::EventCatalog, path: impl AsRef<std::path::Path>) {
    let path = path.as_ref();
    let write = std::env::var("ANNALS_WRITE_SCHEMAS").is_ok_and(|v| v == "1");
    if write || !path.exists() {
        std::fs::write(path, catalog.schema_file())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        // A missing file must not pass unnoticed (in CI, say): write it and fail once.
        assert!(write, "wrote {}: commit it", path.display());
        return;
    }
    let recorded = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    if let Err(changes) = catalog.check_schema_file(&recorded) {
        let list: Vec<String> = changes.iter().map(ToString::to_string).collect();
        panic!(
            "the event schemas changed incompatibly with {}:\n  {}\nbump the event's schema version and register an upcaster, or keep the change compatible",
            path.display(),
            list.join("\n  ")
        );
    }
}
