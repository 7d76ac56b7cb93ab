SELECT
    (SELECT count(*) FROM {schema}.process_instances WHERE process = $1 AND open) AS open,
    (SELECT count(*) FROM {schema}.process_timers WHERE process = $1 AND due_at IS NOT NULL) AS timers
