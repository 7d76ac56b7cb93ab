-- Several events to one existing stream in one statement: append_existing_one.sql with the
-- events as arrays. Returns a NULL base when refused; the caller finds out why, or falls
-- back to append_streams.
WITH head AS (
    UPDATE {schema}.stream_heads h
    SET version = h.version + $2, last_xid = pg_current_xact_id()
    WHERE h.stream_id = $1
      AND CASE WHEN $3 = -1 THEN true WHEN $3 = -3 THEN h.version > 0 ELSE h.version = $3 END
      AND h.last_xid <= pg_current_xact_id()
    RETURNING h.version - $2 AS base
), inserted AS (
    INSERT INTO {schema}.events (event_id, stream_id, stream_version, event_type, schema_version,
                                 metadata, payload, payload_bin)
    SELECT e.id, $1, head.base + e.ord, e.event_type, e.schema_version,
           nullif(e.metadata, '')::jsonb,
           CASE WHEN e.is_json THEN convert_from(e.payload, 'UTF8')::jsonb END,
           CASE WHEN e.is_json THEN NULL ELSE e.payload END
    FROM head,
         unnest($4::uuid[], $5::text[], $6::integer[], $7::text[], $8::boolean[], $9::bytea[])
             WITH ORDINALITY AS e (id, event_type, schema_version, metadata, is_json, payload, ord)
    ORDER BY e.ord
    RETURNING global_position, transaction_id
)
SELECT (SELECT base FROM head) AS base,
       (SELECT max(global_position) FROM inserted) AS last_position,
       (SELECT max(transaction_id) FROM inserted) AS commit_id
