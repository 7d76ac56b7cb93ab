DELETE FROM {schema}.dead_letters WHERE id = $1
