SELECT projection, commit_id, position, state, error, halted_attempts, updated_at
FROM {schema}.checkpoints
WHERE $1::text IS NULL OR projection = $1
ORDER BY projection
