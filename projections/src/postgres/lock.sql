-- A subscription's checkpoint lock, held until the transaction ends (batches, retries of
-- its dead letters, resets and rebuild swaps take it, so they never interleave), and where
-- the checkpoint stands after it (NULLs: it never moved). See lock_checkpoint in migration
-- 0006.
SELECT at_commit, at_position FROM {schema}.lock_checkpoint($1, $2)
