DELETE FROM {schema}.dead_letters WHERE projection = $1
