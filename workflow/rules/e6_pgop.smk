# E6 PG-OP (claim C5): not built yet.
