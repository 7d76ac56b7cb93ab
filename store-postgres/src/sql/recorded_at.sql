SELECT recorded_at FROM {schema}.events WHERE global_position = $1
