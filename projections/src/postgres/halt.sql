-- Marks a projection halted, unless its checkpoint moved since the failing batch began
-- ($3, $4): a stale worker's halt must not stop the worker that replaced it.
INSERT INTO {schema}.checkpoints AS c (projection, commit_id, position, state, error)
VALUES ($1, $3, $4, 'halted', $2)
ON CONFLICT (projection) DO UPDATE SET state = 'halted', error = $2, updated_at = now()
WHERE c.commit_id = $3 AND c.position = $4
