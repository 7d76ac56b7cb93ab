-- Whether the newest stored event carries a transaction id this cluster has not reached:
-- the data was restored from another cluster, and tailing reads (which order by
-- transaction id and stop at the oldest running one) would sort new events before old
-- checkpoints.
SELECT transaction_id >= pg_current_xact_id()
FROM events
ORDER BY transaction_id DESC, global_position DESC
LIMIT 1
