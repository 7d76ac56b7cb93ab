INSERT INTO {schema}.dead_letters
    (projection, event_id, commit_id, position, stream_id, stream_version, event_type, error, attempts, failed_at, message, parks_stream)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (projection, event_id) DO UPDATE
SET error = excluded.error, attempts = excluded.attempts, failed_at = excluded.failed_at,
    message = coalesce(excluded.message, dead_letters.message),
    parks_stream = dead_letters.parks_stream OR excluded.parks_stream
RETURNING id
