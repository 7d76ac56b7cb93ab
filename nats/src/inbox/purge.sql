-- One small batch of inbox rows older than the retention: short statements, no long lock.
DELETE FROM {schema}.inbox
WHERE ctid IN (
    SELECT ctid FROM {schema}.inbox
    WHERE consumer = $1 AND applied_at < $2
    LIMIT $3
)
