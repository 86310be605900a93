# E2 genericity (claim C2): not built yet.
