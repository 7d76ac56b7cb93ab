-- annals event store schema. Runs with search_path set to the store's schema, so every
-- name below lives there (each schema also keeps its own _sqlx_migrations table).

-- One row per stream: its current version. Appends lock these rows (in stream order, so
-- multi-stream appends cannot deadlock); writers to different streams never wait on each
-- other.
CREATE TABLE streams (
    stream_id text   PRIMARY KEY,
    version   bigint NOT NULL CHECK (version >= 0)
);

-- The append-only log. `transaction_id` is the appending transaction's xid8: tailing
-- readers only read rows whose transaction is older than every transaction still running
-- (pg_snapshot_xmin), and order by (transaction_id, global_position), so a late commit can
-- never land behind a reader's checkpoint.
CREATE TABLE events (
    global_position bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid        NOT NULL UNIQUE,
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version > 0),
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    metadata        jsonb,
    payload         jsonb,
    payload_bin     bytea,
    CHECK ((payload IS NULL) <> (payload_bin IS NULL)),
    UNIQUE (stream_id, stream_version)
);

CREATE INDEX events_log ON events (transaction_id, global_position);
CREATE INDEX events_log_by_type ON events (event_type, transaction_id, global_position);

CREATE TABLE snapshots (
    stream_id      text        NOT NULL,
    aggregate_type text        NOT NULL,
    schema_version integer     NOT NULL,
    stream_version bigint      NOT NULL,
    encoding       text        NOT NULL,
    payload        bytea       NOT NULL,
    taken_at       timestamptz NOT NULL,
    PRIMARY KEY (stream_id, aggregate_type, schema_version)
);

-- Appends events to one or several streams atomically, in one statement.
--   p_streams       the streams, each at most once
--   p_expected      per stream: -1 any, -2 no stream, -3 stream exists, n >= 0 exactly n
--   p_event_stream  per event: 1-based index into p_streams
--   p_json          per event: payload is UTF-8 JSON (stored as jsonb) or binary (bytea)
-- Raises SQLSTATE AN409 with DETAIL '<stream index>:<actual version>' on a version
-- mismatch, AN400 for a malformed request. Notifies channel `annals_events.<schema>`.
CREATE FUNCTION append_events(
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
    bad       record;
BEGIN
    IF n_streams = 0 THEN
        RETURN;
    END IF;
    IF (SELECT count(DISTINCT s) FROM unnest(p_streams) s) <> n_streams THEN
        RAISE EXCEPTION 'the same stream appears twice in one append' USING ERRCODE = 'AN400';
    END IF;

    INSERT INTO streams (stream_id, version)
    SELECT s, 0 FROM unnest(p_streams) s ORDER BY s
    ON CONFLICT (stream_id) DO NOTHING;
    PERFORM 1 FROM streams WHERE stream_id = ANY (p_streams) ORDER BY stream_id FOR UPDATE;

    SELECT u.i, st.version INTO bad
    FROM unnest(p_streams, p_expected) WITH ORDINALITY AS u (stream_id, expected, i)
    JOIN streams st ON st.stream_id = u.stream_id
    WHERE NOT CASE
        WHEN u.expected = -1 THEN true
        WHEN u.expected = -2 THEN st.version = 0
        WHEN u.expected = -3 THEN st.version > 0
        ELSE st.version = u.expected
    END
    ORDER BY u.i
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'wrong expected version'
            USING ERRCODE = 'AN409', DETAIL = bad.i || ':' || bad.version;
    END IF;

    IF n_events > 0 THEN
        WITH batch AS (
            SELECT e.*, st.version + row_number() OVER (PARTITION BY e.s ORDER BY e.ord) AS version
            FROM unnest(p_event_stream, p_event_ids, p_event_types, p_schema_versions,
                        p_metadata, p_json, p_payloads)
                 WITH ORDINALITY AS e (s, id, event_type, schema_version, metadata, is_json, payload, ord)
            JOIN streams st ON st.stream_id = p_streams[e.s]
        ), inserted AS (
            INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version,
                                metadata, payload, payload_bin)
            SELECT id, p_streams[s], version, event_type, schema_version,
                   nullif(metadata, '')::jsonb,
                   CASE WHEN is_json THEN convert_from(payload, 'UTF8')::jsonb END,
                   CASE WHEN is_json THEN NULL ELSE payload END
            FROM batch
            ORDER BY ord
            RETURNING global_position
        )
        SELECT max(global_position) INTO last_position FROM inserted;

        UPDATE streams st SET version = st.version + c.n
        FROM (SELECT s, count(*) AS n FROM unnest(p_event_stream) s GROUP BY s) c
        WHERE st.stream_id = p_streams[c.s];

        commit_id := pg_current_xact_id()::text::bigint;
        IF p_notify THEN
            PERFORM pg_notify('annals_events.' || current_schema(), '');
        END IF;
    END IF;

    SELECT array_agg(st.version ORDER BY u.i) INTO versions
    FROM unnest(p_streams) WITH ORDINALITY AS u (stream_id, i)
    JOIN streams st ON st.stream_id = u.stream_id;
END
$$;
