# E3 LayerNorm and affine rank (claim C1): not built yet.
