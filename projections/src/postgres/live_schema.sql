-- The schema a live table resolves to on the search path, ignoring the shadow schema; or,
-- when the table does not exist yet, the first schema of the path.
SELECT coalesce(
    (SELECT n.nspname
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relname = $1 AND c.relkind IN ('r', 'p') AND n.nspname <> $2
       AND n.nspname = ANY (current_schemas(false))
     ORDER BY array_position(current_schemas(false), n.nspname)
     LIMIT 1),
    (SELECT s FROM unnest(current_schemas(false)) s WHERE s <> $2 LIMIT 1)
)
