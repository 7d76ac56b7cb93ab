SELECT global_position, transaction_id AS commit_id, event_id, stream_id, stream_version, event_type, schema_version, recorded_at, metadata::text AS metadata, payload::text AS payload, payload_bin
FROM {schema}.events
WHERE event_id = $1 AND stream_id = $2
