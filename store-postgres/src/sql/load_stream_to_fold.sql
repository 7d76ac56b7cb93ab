-- load_stream.sql for folding into an aggregate: only the columns decoding reads (and its
-- errors name). No event id, stream id (the caller knows it), recording time or metadata:
-- the metadata's JSON, converted to text and parsed on every row, was most of a row's cost
-- (every command records correlation and causation ids). And no ORDER BY: for a long
-- stream the planner reads the rows by a bitmap scan and then sorted them, 2-3 ms of a
-- 10,000-event load's 7; they come in the order they were inserted, which is version
-- order, and the caller checks that (and sorts only if it must).
WITH snap AS (
    SELECT stream_version, encoding, payload, taken_at
    FROM {schema}.snapshots
    WHERE stream_id = $1 AND aggregate_type = $2 AND schema_version = $3
)
SELECT true AS is_snapshot, NULL::bigint AS global_position, NULL::xid8 AS commit_id,
       stream_version, encoding AS event_type, $3 AS schema_version,
       NULL::text AS payload, payload AS payload_bin, taken_at,
       (SELECT version FROM {schema}.stream_heads WHERE stream_id = $1) AS head_version
FROM snap
UNION ALL
SELECT false, global_position, transaction_id AS commit_id, stream_version, event_type, schema_version, payload::text AS payload, payload_bin, NULL::timestamptz, NULL::bigint
FROM {schema}.events
WHERE stream_id = $1 AND stream_version > coalesce((SELECT stream_version FROM snap), 0)
