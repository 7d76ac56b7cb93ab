-- Where a subscription's checkpoint stands (no row: it never moved), read after taking its
-- lock (lock.sql).
SELECT commit_id, position FROM {schema}.checkpoints WHERE projection = $1
