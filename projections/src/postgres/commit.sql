UPDATE {schema}.checkpoints
SET commit_id = $2, position = $3, state = 'running', error = NULL, updated_at = now()
WHERE projection = $1
