-- Sets or cancels (due_at NULL) a timer, unless this decision ($5: its version) or a later
-- one already did (a replayed decision neither moves nor revives it).
INSERT INTO {schema}.process_timers AS t (process, instance, name, due_at, version)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (process, instance, name) DO UPDATE
SET due_at = excluded.due_at, version = excluded.version
WHERE t.version < excluded.version
