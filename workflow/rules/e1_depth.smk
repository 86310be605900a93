# E1: rank collapse in depth (claim C2).
