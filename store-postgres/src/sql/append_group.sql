SELECT outcomes, versions, last_positions, commit_id
FROM {schema}.append_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
