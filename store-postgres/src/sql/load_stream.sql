-- An aggregate's snapshot (if any) and the events after it, in one round trip. The
-- snapshot row carries its encoding in event_type, its payload in payload_bin, and the
-- stream's current version in head_version (a snapshot past it is not used). No outer
-- ORDER BY: sorting the union cost a fifth of a 10,000-event load; the events branch comes
-- in index order and the caller checks the order (and sorts only if it must).
WITH snap AS (
    SELECT stream_version, encoding, payload, taken_at
    FROM {schema}.snapshots
    WHERE stream_id = $1 AND aggregate_type = $2 AND schema_version = $3
)
SELECT true AS is_snapshot, NULL::bigint AS global_position, NULL::xid8 AS commit_id,
       NULL::uuid AS event_id, $1 AS stream_id, stream_version, encoding AS event_type,
       $3 AS schema_version, taken_at AS recorded_at, NULL::text AS metadata,
       NULL::text AS payload, payload AS payload_bin,
       (SELECT version FROM {schema}.stream_heads WHERE stream_id = $1) AS head_version
FROM snap
UNION ALL
(SELECT false, global_position, transaction_id AS commit_id, event_id, stream_id, stream_version, event_type, schema_version, recorded_at, metadata::text AS metadata, payload::text AS payload, payload_bin, NULL::bigint
 FROM {schema}.events
 WHERE stream_id = $1 AND stream_version > coalesce((SELECT stream_version FROM snap), 0)
 ORDER BY stream_version)
