//! The store's SQL, from the `.sql` files beside this module, with the schema filled in.

/// Every statement the store runs, with its schema name (a validated, quoted identifier)
/// substituted for `{schema}` once, at construction.
#[derive(Debug)]
pub(crate) struct Queries {
    pub(crate) append: String,
    pub(crate) append_group: String,
    pub(crate) append_existing: String,
    pub(crate) append_new: String,
    pub(crate) append_existing_one: String,
    pub(crate) append_new_one: String,
    pub(crate) read_stream_forward: String,
    pub(crate) read_stream_backward: String,
    pub(crate) read_all: String,
    pub(crate) read_all_types: String,
    pub(crate) head: String,
    pub(crate) recorded_at: String,
    pub(crate) event_by_id: String,
    pub(crate) held_back: String,
    pub(crate) position_at: String,
    pub(crate) stream_version: String,
    pub(crate) load_snapshot: String,
    pub(crate) save_snapshot: String,
    pub(crate) load_stream: String,
    pub(crate) load_stream_to_fold: String,
    pub(crate) refused: String,
    pub(crate) stored_events: String,
    pub(crate) version_as_of: String,
}

impl Queries {
    pub(crate) fn new(quoted_schema: &str) -> Self {
        // The schema is a validated, quoted identifier (see `PgStoreOptions::schema`).
        let q = |sql: &str| sql.replace("{schema}", quoted_schema);
        Self {
            append: q(include_str!("sql/append.sql")),
            append_group: q(include_str!("sql/append_group.sql")),
            append_existing: q(include_str!("sql/append_existing.sql")),
            append_new: q(include_str!("sql/append_new.sql")),
            append_existing_one: q(include_str!("sql/append_existing_one.sql")),
            append_new_one: q(include_str!("sql/append_new_one.sql")),
            read_stream_forward: q(include_str!("sql/read_stream_forward.sql")),
            read_stream_backward: q(include_str!("sql/read_stream_backward.sql")),
            read_all: q(include_str!("sql/read_all.sql")),
            read_all_types: q(include_str!("sql/read_all_types.sql")),
            head: q(include_str!("sql/head.sql")),
            recorded_at: q(include_str!("sql/recorded_at.sql")),
            event_by_id: q(include_str!("sql/event_by_id.sql")),
            held_back: q(include_str!("sql/held_back.sql")),
            position_at: q(include_str!("sql/position_at.sql")),
            stream_version: q(include_str!("sql/stream_version.sql")),
            load_snapshot: q(include_str!("sql/load_snapshot.sql")),
            save_snapshot: q(include_str!("sql/save_snapshot.sql")),
            load_stream: q(include_str!("sql/load_stream.sql")),
            load_stream_to_fold: q(include_str!("sql/load_stream_to_fold.sql")),
            refused: q(include_str!("sql/refused.sql")),
            stored_events: q(include_str!("sql/stored_events.sql")),
            version_as_of: q(include_str!("sql/version_as_of.sql")),
        }
    }
}
