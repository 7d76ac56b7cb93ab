-- Committed events tailing readers cannot see yet: those of transactions at or past the
-- oldest one still running (served by events_log).
SELECT count(*) FROM {schema}.events
WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot())
