SELECT id, projection, event_id, commit_id, position, stream_id, stream_version, event_type,
       error, attempts, failed_at, message, parks_stream
FROM {schema}.dead_letters
WHERE $1::text IS NULL OR projection = $1
ORDER BY id
