-- Moves a subscription's checkpoint (creating its row the first time) and clears a halt.
INSERT INTO {schema}.checkpoints AS c (projection, commit_id, position, state, error, updated_at)
VALUES ($1, $2, $3, 'running', NULL, now())
ON CONFLICT (projection) DO UPDATE
SET commit_id = excluded.commit_id, position = excluded.position, state = 'running',
    error = NULL, halted_attempts = NULL, updated_at = now()
