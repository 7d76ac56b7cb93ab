SELECT versions, commit_id, last_position
FROM {schema}.append_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
