SELECT versions, commit_id, last_position, repeated
FROM {schema}.append_streams($1, $2, $3, $4, $5, $6, $7, $8, $9)
