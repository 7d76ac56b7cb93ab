-- The batch's applied events into the inbox, and each stream's new version (never moved
-- back: a retried dead letter is applied after its stream went on). The time is the
-- statement's, taken after the stream's row lock: a stream's rows are in applied order.
WITH applied AS (
    INSERT INTO {schema}.inbox (consumer, event_id, stream_id, stream_version, applied_at)
    SELECT $1, e.*, clock_timestamp() FROM unnest($2::uuid[], $3::text[], $4::bigint[]) AS e
    ON CONFLICT (consumer, event_id) DO NOTHING
)
UPDATE {schema}.inbox_streams s
SET version = greatest(s.version, v.version)
FROM unnest($5::text[], $6::bigint[]) AS v(stream_id, version)
WHERE s.consumer = $1 AND s.stream_id = v.stream_id
