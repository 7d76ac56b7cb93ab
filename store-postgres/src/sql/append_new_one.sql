-- One event creating its stream (a command on a fresh aggregate): append_new.sql with
-- scalar parameters, as append_existing_one.sql is to append_existing.sql. Returns no row
-- when the stream already exists.
WITH stream AS (
    INSERT INTO {schema}.streams (stream_id, version) VALUES ($1, 1)
    ON CONFLICT (stream_id) DO NOTHING
    RETURNING version
)
INSERT INTO {schema}.events (event_id, stream_id, stream_version, event_type, schema_version,
                             metadata, payload, payload_bin)
SELECT $2, $1, s.version, $3, $4, $5::jsonb, $6::jsonb, $7
FROM stream s
RETURNING stream_version, global_position, transaction_id
