-- One event creating its stream (a command on a fresh aggregate): append_existing_one.sql's
-- counterpart. Returns no row when the stream already exists. A new stream has no earlier
-- writer to order against.
WITH head AS (
    INSERT INTO {schema}.stream_heads (stream_id, version, last_xid)
    VALUES ($1, 1, pg_current_xact_id())
    ON CONFLICT (stream_id) DO NOTHING
    RETURNING version
)
INSERT INTO {schema}.events (event_id, stream_id, stream_version, event_type, schema_version,
                             metadata, payload, payload_bin)
SELECT $2, $1, head.version, $3, $4, $5::jsonb, $6::jsonb, $7
FROM head
RETURNING stream_version, global_position, transaction_id
