INSERT INTO bank_customers (id, name, email) VALUES ($1, $2, $3)
