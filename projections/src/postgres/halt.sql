INSERT INTO {schema}.checkpoints AS c (projection, state, error) VALUES ($1, 'halted', $2)
ON CONFLICT (projection) DO UPDATE SET state = 'halted', error = $2, updated_at = now()
