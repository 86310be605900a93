# E4 the attention-reachable subspace (claim C3): not built yet.
