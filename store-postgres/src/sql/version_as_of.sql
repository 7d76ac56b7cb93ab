-- A stream's version as of a commit (events of a stream are in commit order).
SELECT coalesce(max(stream_version), 0)
FROM {schema}.events
WHERE stream_id = $1 AND transaction_id <= $2::text::xid8
