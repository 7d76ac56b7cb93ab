-- Whether any session of this database holds the lease lock (see try_lease.sql): a 64-bit advisory key
-- shows in pg_locks as classid (high half) and objid (low half) with objsubid 1.
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND objsubid = 1 AND granted
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND ((classid::bigint << 32) | objid::bigint)
          = hashtextextended('annals.projection:' || $1 || ':' || $2, 0)
)
