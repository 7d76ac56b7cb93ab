-- The position to read after to see every event recorded at or after $1: just before the
-- oldest transaction with such an event (recorded_at is its start time, and a transaction
-- takes its id after it starts, so every event with a smaller id was recorded earlier).
-- No row when no event is that recent (the caller reads the head); a row of NULLs when
-- every event is (read from the start). Served by events_recorded (migration 0010).
WITH first AS (
    SELECT min(transaction_id) AS xid FROM {schema}.events WHERE recorded_at >= $1
)
SELECT e.transaction_id AS commit_id, e.global_position
FROM first
LEFT JOIN LATERAL (
    SELECT transaction_id, global_position FROM {schema}.events
    WHERE transaction_id < first.xid
    ORDER BY transaction_id DESC, global_position DESC
    LIMIT 1
) e ON true
WHERE first.xid IS NOT NULL
