-- Claims due timers: hides each until $3 (a worker that dies holding one lets it fire
-- again then). SKIP LOCKED: workers never wait for each other's claims. Returns the due
-- time each was claimed at.
WITH due AS (
    SELECT process, instance, name, due_at
    FROM {schema}.process_timers
    WHERE process = $1 AND due_at IS NOT NULL AND due_at <= $2
    ORDER BY due_at
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.process_timers t SET due_at = $3
FROM due
WHERE t.process = due.process AND t.instance = due.instance AND t.name = due.name
RETURNING t.instance, t.name, due.due_at, t.version
