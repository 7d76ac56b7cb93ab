-- Replaces the stored snapshot only with a newer one (0 rows affected otherwise).
INSERT INTO {schema}.snapshots AS s
    (stream_id, aggregate_type, schema_version, stream_version, encoding, payload, taken_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (stream_id, aggregate_type, schema_version) DO UPDATE
SET stream_version = excluded.stream_version,
    encoding = excluded.encoding,
    payload = excluded.payload,
    taken_at = excluded.taken_at
WHERE s.stream_version < excluded.stream_version
