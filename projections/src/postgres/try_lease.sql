-- Session-level advisory lock: held while the lease connection lives, released by the
-- server the moment that connection dies (process crash, network loss, kill).
SELECT pg_try_advisory_lock(hashtextextended('annals.projection:' || $1 || ':' || $2, 0))
