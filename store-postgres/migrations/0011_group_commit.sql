-- Group commit: the one-stream appends of many callers in one transaction, one call.
--
-- Each request is one caller's append to one stream and keeps its own outcome: its own
-- expected-version check, conflict and positions. Requests to one stream chain their
-- versions in request order (a request sees the versions the earlier ones wrote). Nothing
-- here raises for one caller's sake: a request that cannot be written is reported, and
-- the others commit.
--
--   p_streams        per request: the stream
--   p_expected       per request: -1 any, -2 no stream, -3 stream exists, n exactly n
--   p_counts         per request: how many events it has (at least one)
--   p_event_request  per event: 1-based request index, requests' events in request order
--   (event columns as append_streams takes them)
--
-- Per request, `outcomes`:
--   0 written: `versions` the stream's new version, `last_positions` its last event's
--   1 conflict: `versions` the stream's version that refused it
--   2 its first event id is stored (by an earlier transaction or an earlier request):
--     a repeat, or a misuse of ids; the caller tells which
--   3 another of its event ids is stored: a misuse of ids (or a repeat of a different
--     shape); the caller tells which
--   4 a younger transaction wrote the stream after this one took its id: append it again
--     in a new transaction
--
-- Order in the log: as append_streams, the streams' advisory locks first, in key order,
-- then the transaction id, so it is younger than every earlier lock holder. Single-
-- statement appends (another process, or this one with group commit off) take no lock:
-- a stream one of them wrote after this transaction took its id is reported stale (4),
-- and one that such an append writes between the read and the write below makes the
-- whole call fail with AN413, nothing written: the caller runs the group again.
-- Which request of its group wrote an event (NULL outside groups). Two appends to one
-- stream in one group share a commit; this tells them apart, so a retry of either is
-- answered as a repeat and a retry merging both is refused (see stored_events.sql). A
-- nullable column without a default: adding it rewrites nothing.
ALTER TABLE events ADD COLUMN group_request smallint;

CREATE FUNCTION append_group(
    p_streams         text[],
    p_expected        bigint[],
    p_counts          integer[],
    p_event_request   integer[],
    p_event_ids       uuid[],
    p_event_types     text[],
    p_schema_versions integer[],
    p_metadata        text[],
    p_json            boolean[],
    p_payloads        bytea[],
    OUT outcomes       smallint[],
    OUT versions       bigint[],
    OUT last_positions bigint[],
    OUT commit_id      xid8
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    n        integer := coalesce(array_length(p_streams, 1), 0);
    mine     xid8;
    -- Per distinct stream: its name, version before this call, version as the requests
    -- so far leave it, whether it had a row, whether a younger transaction wrote it.
    names    text[];
    before   bigint[];
    now_v    bigint[];
    had_row  boolean[];
    stale    boolean[];
    -- Per request: what to add to an event's index in the call for its stream version.
    offsets  bigint[];
    stored   uuid[];
    taken    uuid[] := '{}';
    ids      uuid[];
    r        integer;
    d        integer;
    v        bigint;
    e        bigint;
    ok       boolean;
    k        bigint;
    changed  integer;
    wanted   integer;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    outcomes := array_fill(0::smallint, ARRAY[n]);
    versions := array_fill(NULL::bigint, ARRAY[n]);
    offsets := array_fill(NULL::bigint, ARRAY[n]);

    -- One statement for every lock (a loop of PERFORMs cost 0.4 ms for 64 streams); the
    -- locks are taken in the order the sorted subquery returns the keys.
    PERFORM pg_advisory_xact_lock(q.k)
    FROM (SELECT DISTINCT stream_lock_key(x) AS k FROM unnest(p_streams) x ORDER BY 1) q;
    mine := pg_current_xact_id();

    SELECT array_agg(s.x), array_agg(coalesce(h.version, 0)), array_agg(h.stream_id IS NOT NULL),
           array_agg(coalesce(h.last_xid > mine, false))
    INTO names, before, had_row, stale
    FROM (SELECT DISTINCT x FROM unnest(p_streams) x) s
    LEFT JOIN stream_heads h ON h.stream_id = s.x;
    now_v := before;

    SELECT coalesce(array_agg(event_id), '{}') INTO stored
    FROM events WHERE event_id = ANY (p_event_ids);

    -- k: the index of request r's first event.
    k := 1;
    FOR r IN 1..n LOOP
        IF coalesce(p_counts[r], 0) < 1 THEN
            RAISE EXCEPTION 'request % has no events', r USING ERRCODE = 'AN400';
        END IF;
        ids := p_event_ids[k : k + p_counts[r] - 1];
        d := array_position(names, p_streams[r]);
        IF ids[1] = ANY (stored) OR ids[1] = ANY (taken) THEN
            outcomes[r] := 2;
        ELSIF ids && stored OR ids && taken THEN
            outcomes[r] := 3;
        ELSIF stale[d] THEN
            outcomes[r] := 4;
        ELSE
            v := now_v[d];
            e := p_expected[r];
            ok := CASE WHEN e = -1 THEN true
                       WHEN e = -2 THEN v = 0
                       WHEN e = -3 THEN v > 0
                       ELSE v = e END;
            IF ok THEN
                offsets[r] := v - k + 1;
                now_v[d] := v + p_counts[r];
                versions[r] := now_v[d];
                taken := taken || ids;
            ELSE
                outcomes[r] := 1;
                versions[r] := v;
            END IF;
        END IF;
        k := k + p_counts[r];
    END LOOP;

    -- The stream rows, checked again against what was read: a single-statement append
    -- (no advisory lock) may have written one in between.
    SELECT count(*) INTO wanted
    FROM unnest(had_row, before, now_v) u (had, b, a) WHERE u.had AND u.a > u.b;
    IF wanted > 0 THEN
        UPDATE stream_heads h SET version = u.a, last_xid = mine
        FROM unnest(names, had_row, before, now_v) u (s, had, b, a)
        WHERE u.had AND u.a > u.b AND h.stream_id = u.s AND h.version = u.b
          AND h.last_xid <= mine;
        GET DIAGNOSTICS changed = ROW_COUNT;
        IF changed <> wanted THEN
            RAISE EXCEPTION 'a stream was written during the group commit'
                USING ERRCODE = 'AN413';
        END IF;
    END IF;
    SELECT count(*) INTO wanted
    FROM unnest(had_row, now_v) u (had, a) WHERE NOT u.had AND u.a > 0;
    IF wanted > 0 THEN
        INSERT INTO stream_heads (stream_id, version, last_xid)
        SELECT u.s, u.a, mine
        FROM unnest(names, had_row, now_v) u (s, had, a)
        WHERE NOT u.had AND u.a > 0
        ON CONFLICT (stream_id) DO NOTHING;
        GET DIAGNOSTICS changed = ROW_COUNT;
        IF changed <> wanted THEN
            RAISE EXCEPTION 'a stream was created during the group commit'
                USING ERRCODE = 'AN413';
        END IF;
    END IF;

    IF cardinality(taken) = 0 THEN
        RETURN;
    END IF;
    WITH inserted AS (
        INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version,
                            metadata, payload, payload_bin, group_request)
        SELECT ev.id, p_streams[ev.req], offsets[ev.req] + ev.ord,
               ev.event_type, ev.schema_version,
               nullif(ev.metadata, '')::jsonb,
               CASE WHEN ev.is_json THEN convert_from(ev.payload, 'UTF8')::jsonb END,
               CASE WHEN ev.is_json THEN NULL ELSE ev.payload END,
               ev.req::smallint
        FROM unnest(p_event_request, p_event_ids, p_event_types, p_schema_versions,
                    p_metadata, p_json, p_payloads)
             WITH ORDINALITY AS ev (req, id, event_type, schema_version, metadata, is_json,
                                    payload, ord)
        WHERE outcomes[ev.req] = 0
        ORDER BY ev.ord
        RETURNING event_id, global_position
    )
    SELECT array_agg(p.last ORDER BY i) INTO last_positions
    FROM generate_series(1, n) i
    LEFT JOIN (SELECT ev.req, max(ins.global_position) AS last
               FROM inserted ins
               JOIN unnest(p_event_request, p_event_ids) AS ev (req, id) ON ev.id = ins.event_id
               GROUP BY ev.req) p ON p.req = i;
    commit_id := mine;
END
$$;
