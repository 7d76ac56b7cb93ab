SELECT version FROM {schema}.stream_heads WHERE stream_id = $1
