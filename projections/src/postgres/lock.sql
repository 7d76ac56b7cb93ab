-- A subscription's checkpoint lock, held until the transaction ends: batches, retries of
-- its dead letters, resets and rebuild swaps take it, so they never interleave. An advisory
-- lock rather than a row lock: it takes no transaction id (see PgCheckpoints::lock_checkpoint).
SELECT pg_advisory_xact_lock(hashtextextended('annals.checkpoint:' || $1 || ':' || $2, 0))
