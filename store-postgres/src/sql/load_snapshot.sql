SELECT stream_version, encoding, payload, taken_at
FROM {schema}.snapshots
WHERE stream_id = $1 AND aggregate_type = $2 AND schema_version = $3
