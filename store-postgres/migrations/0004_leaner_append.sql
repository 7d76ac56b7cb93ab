-- A leaner append_events. Per stream, one UPDATE locks the stream row, bumps its version
-- and returns the old one (a new stream is one INSERT instead); the expected version is
-- checked against it and a mismatch raises AN409, rolling the bump back. Then one INSERT
-- writes every event. A single-stream append runs two SQL statements, down from seven
-- (measured server-side: 0.43 ms per call before, about a third of it after). Same
-- signature, results and errors as before.

-- Locks (or creates) one stream, bumps its version by `p_count` and checks `p_expected`
-- (-1 any, -2 no stream, -3 stream exists, n exactly n) against the version it had.
-- Returns that previous version. `p_index` is the stream's place in the append, for the
-- conflict's DETAIL ('<index>:<actual>').
CREATE FUNCTION lock_stream(p_stream text, p_count bigint, p_expected bigint, p_index integer)
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    actual  bigint;
    matches boolean;
BEGIN
    UPDATE streams SET version = version + p_count
    WHERE stream_id = p_stream
    RETURNING version - p_count INTO actual;
    IF NOT FOUND THEN
        actual := 0;
        IF p_count > 0 THEN
            INSERT INTO streams (stream_id, version) VALUES (p_stream, p_count)
            ON CONFLICT (stream_id) DO NOTHING;
            IF NOT FOUND THEN
                -- Created concurrently and committed meanwhile: lock and bump that row.
                UPDATE streams SET version = version + p_count
                WHERE stream_id = p_stream
                RETURNING version - p_count INTO actual;
            END IF;
        END IF;
    END IF;
    matches := CASE
        WHEN p_expected = -1 THEN true
        WHEN p_expected = -2 THEN actual = 0
        WHEN p_expected = -3 THEN actual > 0
        ELSE actual = p_expected
    END;
    IF NOT matches THEN
        RAISE EXCEPTION 'wrong expected version'
            USING ERRCODE = 'AN409', DETAIL = p_index || ':' || actual;
    END IF;
    RETURN actual;
END
$$;

CREATE OR REPLACE FUNCTION append_events(
    p_streams         text[],
    p_expected        bigint[],
    p_event_stream    integer[],
    p_event_ids       uuid[],
    p_event_types     text[],
    p_schema_versions integer[],
    p_metadata        text[],
    p_json            boolean[],
    p_payloads        bytea[],
    p_notify          boolean,
    OUT versions      bigint[],
    OUT commit_id     bigint,
    OUT last_position bigint
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    n_streams integer := coalesce(array_length(p_streams, 1), 0);
    n_events  integer := coalesce(array_length(p_event_ids, 1), 0);
    counts    bigint[];
    base      bigint[];
    s         record;
BEGIN
    IF n_streams = 0 THEN
        RETURN;
    ELSIF n_streams = 1 THEN
        base := ARRAY[lock_stream(p_streams[1], n_events, p_expected[1], 1)];
        versions := ARRAY[base[1] + n_events];
    ELSE
        IF (SELECT count(DISTINCT x) FROM unnest(p_streams) x) <> n_streams THEN
            RAISE EXCEPTION 'the same stream appears twice in one append' USING ERRCODE = 'AN400';
        END IF;
        SELECT array_agg(coalesce(c.n, 0) ORDER BY i) INTO counts
        FROM generate_series(1, n_streams) i
        LEFT JOIN (SELECT es, count(*) AS n FROM unnest(p_event_stream) es GROUP BY es) c ON c.es = i;
        base := array_fill(0::bigint, ARRAY[n_streams]);
        versions := base;
        -- In stream-id order, so multi-stream appends cannot deadlock.
        FOR s IN
            SELECT u.i, u.stream_id, u.expected
            FROM unnest(p_streams, p_expected) WITH ORDINALITY AS u (stream_id, expected, i)
            ORDER BY u.stream_id
        LOOP
            base[s.i] := lock_stream(s.stream_id, counts[s.i], s.expected, s.i::integer);
            versions[s.i] := base[s.i] + counts[s.i];
        END LOOP;
    END IF;

    IF n_events = 0 THEN
        RETURN;
    END IF;
    WITH inserted AS (
        INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version,
                            metadata, payload, payload_bin)
        SELECT e.id, p_streams[e.s],
               base[e.s] + CASE WHEN n_streams = 1 THEN e.ord
                                ELSE row_number() OVER (PARTITION BY e.s ORDER BY e.ord) END,
               e.event_type, e.schema_version,
               nullif(e.metadata, '')::jsonb,
               CASE WHEN e.is_json THEN convert_from(e.payload, 'UTF8')::jsonb END,
               CASE WHEN e.is_json THEN NULL ELSE e.payload END
        FROM unnest(p_event_stream, p_event_ids, p_event_types, p_schema_versions,
                    p_metadata, p_json, p_payloads)
             WITH ORDINALITY AS e (s, id, event_type, schema_version, metadata, is_json, payload, ord)
        ORDER BY e.ord
        RETURNING global_position
    )
    SELECT max(global_position) INTO last_position FROM inserted;
    commit_id := pg_current_xact_id()::text::bigint;
    IF p_notify THEN
        PERFORM pg_notify('annals_events.' || current_schema(), '');
    END IF;
END
$$;
