"""Reproducible evidence for the claims of Cirrincione (2026) on representational
collapse in Transformers: rank, LayerNorm, residuals, head-channel
non-identifiability, PG-OP and the symmetry table."""

__version__ = "0.1.0"
