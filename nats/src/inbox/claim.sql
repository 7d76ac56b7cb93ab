-- Locks the consumer's rows of these streams (in stream order, so that processes sharing
-- the consumer cannot deadlock) and returns their versions, with the events already in the
-- inbox and the streams parked behind a dead letter. $1 consumer, $2 streams, $3 events.
-- The arrays are joined (hash or index), never scanned per row.
WITH locked AS MATERIALIZED (
    SELECT s.stream_id, s.version
    FROM unnest($2::text[]) AS t(id)
    JOIN {schema}.inbox_streams s ON s.consumer = $1 AND s.stream_id = t.id
    ORDER BY s.stream_id
    FOR UPDATE OF s
)
SELECT 's' AS kind, stream_id, version, NULL::uuid AS event_id FROM locked
UNION ALL
SELECT 'a', NULL, NULL, i.event_id
FROM unnest($3::uuid[]) AS e(id)
JOIN {schema}.inbox i ON i.consumer = $1 AND i.event_id = e.id
UNION ALL
SELECT DISTINCT 'p', d.stream_id, NULL::bigint, NULL::uuid
FROM unnest($2::text[]) AS t(id)
JOIN {schema}.dead_letters d ON d.projection = $1 AND d.stream_id = t.id
