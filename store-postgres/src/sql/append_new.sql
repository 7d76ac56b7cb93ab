-- Several events creating their stream in one statement (append_new_one.sql with arrays).
-- Returns a NULL base when the stream already exists.
WITH head AS (
    INSERT INTO {schema}.stream_heads (stream_id, version, last_xid)
    VALUES ($1, $2, pg_current_xact_id())
    ON CONFLICT (stream_id) DO NOTHING
    RETURNING 0::bigint AS base
), inserted AS (
    INSERT INTO {schema}.events (event_id, stream_id, stream_version, event_type, schema_version,
                                 metadata, payload, payload_bin)
    SELECT e.id, $1, head.base + e.ord, e.event_type, e.schema_version,
           nullif(e.metadata, '')::jsonb,
           CASE WHEN e.is_json THEN convert_from(e.payload, 'UTF8')::jsonb END,
           CASE WHEN e.is_json THEN NULL ELSE e.payload END
    FROM head,
         unnest($3::uuid[], $4::text[], $5::integer[], $6::text[], $7::boolean[], $8::bytea[])
             WITH ORDINALITY AS e (id, event_type, schema_version, metadata, is_json, payload, ord)
    ORDER BY e.ord
    RETURNING global_position, transaction_id
)
SELECT (SELECT base FROM head) AS base,
       (SELECT max(global_position) FROM inserted) AS last_position,
       (SELECT max(transaction_id) FROM inserted) AS commit_id
