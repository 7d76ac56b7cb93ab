-- Fast path for creating a stream with its first events in one statement. Returns a NULL
-- base when the stream already exists (the caller reports the conflict or falls back to
-- append_events). A concurrent creator makes this INSERT wait for its outcome.
WITH stream AS (
    INSERT INTO {schema}.streams (stream_id, version) VALUES ($1, $2)
    ON CONFLICT (stream_id) DO NOTHING
    RETURNING 0::bigint AS base
), inserted AS (
    INSERT INTO {schema}.events (event_id, stream_id, stream_version, event_type, schema_version,
                                 metadata, payload, payload_bin)
    SELECT e.id, $1, s.base + e.ord, e.event_type, e.schema_version,
           nullif(e.metadata, '')::jsonb,
           CASE WHEN e.is_json THEN convert_from(e.payload, 'UTF8')::jsonb END,
           CASE WHEN e.is_json THEN NULL ELSE e.payload END
    FROM stream s,
         unnest($3::uuid[], $4::text[], $5::integer[], $6::text[], $7::boolean[], $8::bytea[])
             WITH ORDINALITY AS e (id, event_type, schema_version, metadata, is_json, payload, ord)
    ORDER BY e.ord
    RETURNING global_position
)
SELECT (SELECT base FROM stream) AS base,
       (SELECT max(global_position) FROM inserted) AS last_position,
       pg_current_xact_id() AS commit_id
