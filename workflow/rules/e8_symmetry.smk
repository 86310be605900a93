# E8 the symmetry table (claim C6): not built yet.
