-- Reads filtered by event type scan events_log in (transaction_id, global_position) order
-- and skip other types. The per-type index this drops let the planner pick a bitmap scan
-- plus sort over every remaining row of a type, per page (quadratic catch-up whenever
-- statistics are stale, as after a bulk load); it also cost every append an index insert.
DROP INDEX IF EXISTS events_log_by_type;
