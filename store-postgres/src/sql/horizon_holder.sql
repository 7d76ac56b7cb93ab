-- The session with the oldest running transaction id: it sets the horizon.
SELECT pid, datname::text AS datname, usename::text AS usename, state,
       extract(epoch FROM now() - xact_start)::float8 AS age_seconds,
       left(query, 120) AS query
FROM pg_stat_activity
WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
ORDER BY age(backend_xid) DESC
LIMIT 1
