SELECT id, name, email FROM bank_customers WHERE id = ANY ($1) ORDER BY id
