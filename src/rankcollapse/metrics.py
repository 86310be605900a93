"""Rank and collapse metrics of a token matrix X (n x d), batched over leading axes.

Every metric follows the conventions of the project: ranks count singular values
above ``rtol * sigma_1(X)``; the affine rank thresholds the centred matrix
``X - 1 xbar^T`` against ``sigma_1(X)`` of the uncentred one; the Dong residual
ratio is ``||X - 1 xbar^T|| / ||X||``.
"""

from __future__ import annotations

import numpy as np
import torch

EPS32 = float(np.finfo(np.float32).eps)


def default_rtol(n: int, d: int) -> float:
    """The default relative tolerance ``max(n, d) * eps(float32)``."""
    return max(n, d) * EPS32


def centre(x: torch.Tensor) -> torch.Tensor:
    """Subtract the token mean: ``X - 1 xbar^T`` over the token axis (-2)."""
    return x - x.mean(dim=-2, keepdim=True)


def rank_from_spectrum(s: torch.Tensor, sigma_1: torch.Tensor, rtol: float):
    """Count singular values ``s`` above ``rtol * sigma_1`` (batched)."""
    return (s > rtol * sigma_1.unsqueeze(-1)).sum(dim=-1)


def composite_norm(m: torch.Tensor) -> torch.Tensor:
    """``sqrt(||M||_1 ||M||_inf)``: max column abs-sum times max row abs-sum."""
    a = m.abs()
    col = a.sum(dim=-2).amax(dim=-1)
    row = a.sum(dim=-1).amax(dim=-1)
    return torch.sqrt(col * row)


def effective_rank(s: torch.Tensor) -> torch.Tensor:
    """``exp(H(p))`` with ``p = s / sum(s)``; 0 for a zero matrix."""
    total = s.sum(dim=-1, keepdim=True)
    p = torch.where(total > 0, s / total.clamp_min(1e-300), torch.zeros_like(s))
    h = -(p * torch.log(p.clamp_min(1e-300))).sum(dim=-1)
    return torch.where(total.squeeze(-1) > 0, torch.exp(h), torch.zeros_like(h))


def stable_rank(s: torch.Tensor) -> torch.Tensor:
    """``||M||_F^2 / ||M||_2^2`` from the singular values; 0 for a zero matrix."""
    top = s[..., 0] ** 2
    return torch.where(top > 0, (s**2).sum(dim=-1) / top.clamp_min(1e-300), 0 * top)


def mean_cosine(x: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity over ordered pairs of distinct tokens (rows)."""
    n = x.shape[-2]
    u = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    gram = u @ u.transpose(-1, -2)
    off = gram.sum(dim=(-1, -2)) - torch.diagonal(gram, dim1=-2, dim2=-1).sum(-1)
    return off / max(n * (n - 1), 1)


def token_metrics(x: torch.Tensor, rtols: list[float] | None = None) -> dict:
    """All per-site metrics of ``x`` (..., n, d), computed in float64.

    Returns a dict of tensors with the leading shape of ``x``. Rank keys are
    ``rank`` and ``affine_rank`` at the default tolerance, and
    ``rank@<rtol>`` / ``affine_rank@<rtol>`` for each extra tolerance.
    """
    x = x.to(torch.float64)
    n, d = x.shape[-2:]
    xc = centre(x)

    # Spectra of X and of the centred X, in one batched call each.
    s = torch.linalg.svdvals(x)
    sc = torch.linalg.svdvals(xc)
    sigma_1 = s[..., 0]

    out = {
        "sigma_1": sigma_1,
        "rank": rank_from_spectrum(s, sigma_1, default_rtol(n, d)),
        "affine_rank": rank_from_spectrum(sc, sigma_1, default_rtol(n, d)),
    }
    for rtol in rtols or []:
        out[f"rank@{rtol:g}"] = rank_from_spectrum(s, sigma_1, rtol)
        out[f"affine_rank@{rtol:g}"] = rank_from_spectrum(sc, sigma_1, rtol)

    # Dong et al.'s residual, relative to X, in two norms.
    out["res_ratio"] = composite_norm(xc) / composite_norm(x).clamp_min(1e-300)
    out["res_ratio_fro"] = xc.norm(dim=(-2, -1)) / x.norm(dim=(-2, -1)).clamp_min(
        1e-300
    )

    # Soft measures of the centred spectrum.
    out["effective_rank"] = effective_rank(sc)
    out["stable_rank"] = stable_rank(sc)
    out["mean_cosine"] = mean_cosine(x)
    out["sigma_min_ratio"] = sc[..., min(n - 1, d) - 1] / sigma_1.clamp_min(1e-300)
    return out


def spectra(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Singular values of ``x`` and of its centred version, normalised by sigma_1."""
    x = x.to(torch.float64)
    s = torch.linalg.svdvals(x)
    sc = torch.linalg.svdvals(centre(x))
    top = s[..., :1].clamp_min(1e-300)
    return s / top, sc / top
