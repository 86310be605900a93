# E7 width and entropy (claim C6): not built yet.
