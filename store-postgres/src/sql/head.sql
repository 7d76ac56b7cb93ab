SELECT transaction_id AS commit_id, global_position
FROM {schema}.events
WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY transaction_id DESC, global_position DESC
LIMIT 1
