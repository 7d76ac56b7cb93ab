-- read_all.sql, restricted to some event types (served by events_log_by_type).
SELECT global_position, transaction_id AS commit_id, event_id, stream_id, stream_version, event_type, schema_version, recorded_at, metadata::text AS metadata, payload::text AS payload, payload_bin
FROM {schema}.events
WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
  AND event_type = ANY ($4)
ORDER BY transaction_id, global_position
LIMIT $3
