"""Rank collapse in width (Nait Saada, Naderi & Tanner 2024): one random-initialised
attention head ``A = softmax(X W_Q (X W_K)^T / sqrt(d_k))`` at sequence length n,
its spectral gap ``sigma_2(A) / sigma_1(A)`` and the Dong residual ratio of ``A X``,
with and without their remedy ``A - 1 1^T / n``, which removes the outlier.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.sparse.linalg import eigsh
from tqdm import tqdm

from rankcollapse.metrics import centre, composite_norm

log = logging.getLogger(__name__)

# The two mixings compared: the softmax matrix and the remedy that removes its
# outlier singular value (the all-ones direction).
MIXINGS = ("softmax", "centred")


@dataclass
class AttentionShape:
    """The shapes one head reads, and the initialiser of the model they come from."""

    d: int  # model width
    d_k: int  # head width
    initializer_range: float  # std of the model's own weight initialiser

    @classmethod
    def from_config(cls, config) -> AttentionShape:
        """From a transformers ``BertConfig`` (or anything with the same fields)."""
        d, H = config.hidden_size, config.num_attention_heads
        return cls(d=d, d_k=d // H, initializer_range=config.initializer_range)


def log_spaced(n_min: int, n_max: int, points: int) -> list[int]:
    """``points`` lengths from ``n_min`` to ``n_max``, evenly spaced in log n."""
    return sorted({int(round(v)) for v in np.geomspace(n_min, n_max, points)})


def weight_std(spec: str | float, shape: AttentionShape) -> float:
    """Std of W_Q, W_K entries: ``init`` (the model's initialiser), ``fan_in``
    (``1 / sqrt(d)``, the scale of Nait Saada et al.'s analysis) or a number."""
    if spec == "init":
        return float(shape.initializer_range)
    if spec == "fan_in":
        return 1.0 / math.sqrt(shape.d)
    if isinstance(spec, int | float):
        return float(spec)
    raise ValueError(f"weight init {spec!r}: expected init, fan_in or a number")


def draw_attention(
    shape: AttentionShape, n: int, std: float, logits: str, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw: tokens ``X`` (n, d) with N(0, 1) entries and one head's ``A`` (n, n).

    ``logits="bilinear"`` is real attention, ``X W_Q (X W_K)^T / sqrt(d_k)`` with
    N(0, std^2) weights (rank at most d_k); ``"iid"`` replaces those logits by
    independent Gaussians of the same empirical std (the random Markov matrix of
    Nait Saada et al.'s analysis).
    """
    x = torch.randn(n, shape.d, generator=gen, dtype=torch.float64)
    w_q = torch.randn(shape.d, shape.d_k, generator=gen, dtype=torch.float64) * std
    w_k = torch.randn(shape.d, shape.d_k, generator=gen, dtype=torch.float64) * std

    # Attention logits, (n, n).
    s = (x @ w_q) @ (x @ w_k).T / math.sqrt(shape.d_k)
    if logits == "iid":
        s = torch.randn(n, n, generator=gen, dtype=torch.float64) * s.std()
    elif logits != "bilinear":
        raise ValueError(f"logits {logits!r}: expected bilinear or iid")
    return x, torch.softmax(s, dim=-1)


def top_singular_values(m: torch.Tensor, k: int = 2, full_max_n: int = 512):
    """The k largest singular values of a square float64 matrix, largest first.

    Up to ``full_max_n`` rows: all singular values (LAPACK). Beyond: Lanczos
    (ARPACK) on the Gram matrix ``M M^T``, k eigenvalues only, so n = 2048 costs
    about a second instead of ten.
    """
    n = m.shape[-1]
    if n <= full_max_n or n <= k + 1:
        return torch.linalg.svdvals(m)[:k]
    gram = (m @ m.T).numpy()
    w = eigsh(gram, k=k, which="LA", return_eigenvectors=False, tol=1e-12)
    w = np.sort(np.clip(w, 0.0, None))[::-1]
    return torch.from_numpy(np.sqrt(w).copy())


def mixing_metrics(a: torch.Tensor, x: torch.Tensor, full_max_n: int = 512) -> dict:
    """Gap and residual ratios of one mixing matrix ``a`` (n, n) applied to ``x``.

    ``sigma_ratio`` is ``sigma_2 / sigma_1`` of ``a``; ``res_ratio`` and
    ``res_ratio_fro`` are Dong's ``||AX - 1 mean^T|| / ||AX||`` in the composite
    and the Frobenius norm; ``signal_ratio`` is ``||AX||_F / ||X||_F``.
    """
    s = top_singular_values(a, 2, full_max_n)
    ax = a @ x
    axc = centre(ax)
    return {
        "sigma_1": float(s[0]),
        "sigma_2": float(s[1]),
        "sigma_ratio": float(s[1] / s[0]),
        "res_ratio": float(composite_norm(axc) / composite_norm(ax)),
        "res_ratio_fro": float(axc.norm() / ax.norm()),
        "signal_ratio": float(ax.norm() / x.norm()),
    }


def width_sweep(
    shape: AttentionShape,
    ns: list[int],
    draws: int,
    weight_inits: list,
    logits: list[str],
    seed: int = 0,
    full_max_n: int = 512,
    progress: bool = True,
) -> pd.DataFrame:
    """Every (weight init, logits, n, draw): both mixings' metrics, as a long table.

    Columns: ``weight_init, std, logits, n, draw, mixing, metric, value``. Draw
    ``k`` at length ``n`` uses the seed ``(seed, n, k)`` for every weight init, so
    the inits compare the same tokens.
    """
    rows = []
    grid = [
        (w, lg, n, k)
        for w in weight_inits
        for lg in logits
        for n in ns
        for k in range(draws)
    ]
    for w, lg, n, k in tqdm(grid, desc="width", disable=not progress, mininterval=5):
        std = weight_std(w, shape)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + n * 1_009 + k)
        x, a = draw_attention(shape, n, std, lg, gen)

        # The softmax matrix, then the remedy that subtracts its row-stochastic mean.
        for mixing, m in (("softmax", a), ("centred", a - 1.0 / n)):
            for metric, value in mixing_metrics(m, x, full_max_n).items():
                rows.append((str(w), std, lg, n, k, mixing, metric, value))

    return pd.DataFrame(
        rows,
        columns=[
            "weight_init",
            "std",
            "logits",
            "n",
            "draw",
            "mixing",
            "metric",
            "value",
        ],
    )


def gap_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Median ``sigma_ratio`` per model, init, logits and mixing at the smallest and
    largest n, and the log-log slope of the median against n."""
    med = (
        df[df.metric == "sigma_ratio"]
        .groupby(["model", "weight_init", "logits", "mixing", "n"])["value"]
        .median()
        .reset_index()
    )
    out = []
    for key, g in med.groupby(["model", "weight_init", "logits", "mixing"]):
        g = g.sort_values("n")
        slope = np.polyfit(np.log(g.n), np.log(g.value.clip(lower=1e-300)), 1)[0]
        out.append(
            {
                **dict(
                    zip(["model", "weight_init", "logits", "mixing"], key, strict=True)
                ),
                "n_min": int(g.n.iloc[0]),
                "ratio_at_n_min": float(g.value.iloc[0]),
                "n_max": int(g.n.iloc[-1]),
                "ratio_at_n_max": float(g.value.iloc[-1]),
                "slope": float(slope),
            }
        )
    return pd.DataFrame(out)


def plot_width(df: pd.DataFrame):
    """Median gap and residual ratio against n: columns model x weight init, rows
    metric; colour the mixing, dashes the logits; bands are the draws' range."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    metrics = {
        "sigma_ratio": r"$\sigma_2(A) / \sigma_1(A)$",
        "res_ratio": r"residual ratio of $AX$",
    }
    cols = df[["model", "weight_init"]].drop_duplicates().itertuples(index=False)
    cols = list(cols)
    fig, axes = plt.subplots(
        len(metrics),
        len(cols),
        squeeze=False,
        sharex=True,
        figsize=(3.2 * len(cols), 5.6),
    )
    for j, (model, init) in enumerate(cols):
        sub = df[(df.model == model) & (df.weight_init == init)]
        for i, (metric, label) in enumerate(metrics.items()):
            ax = axes[i, j]
            sns.lineplot(
                data=sub[sub.metric == metric],
                x="n",
                y="value",
                hue="mixing",
                style="logits",
                estimator="median",
                errorbar=("pi", 100),
                ax=ax,
                legend=(i == 0 and j == 0),
            )
            ax.set(xscale="log", yscale="log", ylabel=label if j == 0 else "")
            if i == 0:
                ax.set_title(f"{model}\nweights: {init}", fontsize=9)
    fig.tight_layout()
    return fig
