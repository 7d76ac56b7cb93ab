INSERT INTO {schema}.process_instances AS i (process, instance, open)
VALUES ($1, $2, $3)
ON CONFLICT (process, instance) DO UPDATE SET open = excluded.open, updated_at = now()
WHERE i.open IS DISTINCT FROM excluded.open
