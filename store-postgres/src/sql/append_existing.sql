-- Fast path for appending to one existing stream: lock + check + bump the stream row and
-- insert the events in one statement (no plpgsql). Returns a NULL base when the stream is
-- missing or not at the expected version ($3: -1 any, -3 stream exists, n exactly n);
-- the caller then reads the actual version to report the conflict, or falls back to
-- append_events. Under READ COMMITTED a concurrent bump makes the UPDATE re-check its
-- WHERE on the new version, so two writers can never both pass.
WITH stream AS (
    UPDATE {schema}.streams SET version = version + $2
    WHERE stream_id = $1
      AND CASE WHEN $3 = -1 THEN true WHEN $3 = -3 THEN version > 0 ELSE version = $3 END
    RETURNING version - $2 AS base
), inserted AS (
    INSERT INTO {schema}.events (event_id, stream_id, stream_version, event_type, schema_version,
                                 metadata, payload, payload_bin)
    SELECT e.id, $1, s.base + e.ord, e.event_type, e.schema_version,
           nullif(e.metadata, '')::jsonb,
           CASE WHEN e.is_json THEN convert_from(e.payload, 'UTF8')::jsonb END,
           CASE WHEN e.is_json THEN NULL ELSE e.payload END
    FROM stream s,
         unnest($4::uuid[], $5::text[], $6::integer[], $7::text[], $8::boolean[], $9::bytea[])
             WITH ORDINALITY AS e (id, event_type, schema_version, metadata, is_json, payload, ord)
    ORDER BY e.ord
    RETURNING global_position
)
SELECT (SELECT base FROM stream) AS base,
       (SELECT max(global_position) FROM inserted) AS last_position,
       pg_current_xact_id() AS commit_id
