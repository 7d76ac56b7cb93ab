UPDATE {schema}.dead_letters SET projection = $2 WHERE projection = $1
