-- Marks a projection halted, unless its checkpoint moved since the failing batch began
-- ($3, $4): a stale worker's halt must not stop the worker that replaced it. $5: how many
-- attempts the event took (for the dead letter `skip` makes of it).
INSERT INTO {schema}.checkpoints AS c (projection, commit_id, position, state, error, halted_attempts)
VALUES ($1, $3, $4, 'halted', $2, $5)
ON CONFLICT (projection) DO UPDATE SET state = 'halted', error = $2, halted_attempts = $5, updated_at = now()
WHERE c.commit_id = $3 AND c.position = $4
