//! The store's SQL, from the `.sql` files beside this module, with the schema filled in.

use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};

/// Every statement the store runs, with its schema name (a validated, quoted identifier)
/// substituted for `{schema}` once, at construction.
#[derive(Debug)]
pub(crate) struct Queries {
    pub(crate) append: SqlStr,
    pub(crate) append_existing: SqlStr,
    pub(crate) append_new: SqlStr,
    pub(crate) append_existing_one: SqlStr,
    pub(crate) append_new_one: SqlStr,
    pub(crate) read_stream_forward: SqlStr,
    pub(crate) read_stream_backward: SqlStr,
    pub(crate) read_all: SqlStr,
    pub(crate) read_all_types: SqlStr,
    pub(crate) head: SqlStr,
    pub(crate) stream_version: SqlStr,
    pub(crate) load_snapshot: SqlStr,
    pub(crate) save_snapshot: SqlStr,
    pub(crate) load_stream: SqlStr,
    pub(crate) refused: SqlStr,
    pub(crate) stored_events: SqlStr,
    pub(crate) version_as_of: SqlStr,
}

impl Queries {
    pub(crate) fn new(quoted_schema: &str) -> Self {
        // The schema is a validated, quoted identifier (see `PgStoreOptions::schema`).
        let q = |sql: &str| AssertSqlSafe(sql.replace("{schema}", quoted_schema)).into_sql_str();
        Self {
            append: q(include_str!("sql/append.sql")),
            append_existing: q(include_str!("sql/append_existing.sql")),
            append_new: q(include_str!("sql/append_new.sql")),
            append_existing_one: q(include_str!("sql/append_existing_one.sql")),
            append_new_one: q(include_str!("sql/append_new_one.sql")),
            read_stream_forward: q(include_str!("sql/read_stream_forward.sql")),
            read_stream_backward: q(include_str!("sql/read_stream_backward.sql")),
            read_all: q(include_str!("sql/read_all.sql")),
            read_all_types: q(include_str!("sql/read_all_types.sql")),
            head: q(include_str!("sql/head.sql")),
            stream_version: q(include_str!("sql/stream_version.sql")),
            load_snapshot: q(include_str!("sql/load_snapshot.sql")),
            save_snapshot: q(include_str!("sql/save_snapshot.sql")),
            load_stream: q(include_str!("sql/load_stream.sql")),
            refused: q(include_str!("sql/refused.sql")),
            stored_events: q(include_str!("sql/stored_events.sql")),
            version_as_of: q(include_str!("sql/version_as_of.sql")),
        }
    }
}
