"""Attention entropy (Zhai et al. 2023): per head, the mean over queries of
``-sum_j a_ij log a_ij``, also divided by ``log n`` (n keys, so 1 is uniform and 0
is one-hot); and a small encoder trained from scratch at a high learning rate,
with and without sigma-reparametrisation ``W_hat = gamma W / sigma_max(W)`` of W_Q
and W_K, to show entropy collapse and its remedy.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from rankcollapse.capture import run_and_capture
from rankcollapse.corpus import batches

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------
# Entropy of attention probabilities.


def attention_entropy(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy (nats) and entropy / log(n_keys) of ``probs`` (..., n_q, n_k).

    Each row is one query's distribution over keys; the result is the mean over
    queries, shape ``(...)``. ``0 log 0 = 0``. The normalised entropy is NaN for a
    single key, where ``log n_k = 0``.
    """
    p = probs.to(torch.float64)
    h = -(p * torch.log(p.clamp_min(1e-300))).sum(dim=-1).mean(dim=-1)
    n_k = p.shape[-1]
    return h, h / math.log(n_k) if n_k > 1 else torch.full_like(h, float("nan"))


def model_entropy(model, seqs, batch_size: int, pad_id: int = 0) -> pd.DataFrame:
    """Entropy of every head of every layer for every sequence of the corpus.

    Reads the site ``blocks.{l}.attn.probs`` (H, n, n) in one forward pass per
    batch; padding keys and queries are dropped before the entropy. Columns:
    ``seq, n, layer, head, metric, value`` with metrics ``entropy`` and
    ``entropy_norm``.
    """
    rows = []
    for seq_ids, ids, mask in tqdm(
        list(batches(seqs, batch_size, pad_id)), desc="entropy", mininterval=5
    ):
        for seq_id, sites in zip(
            seq_ids,
            run_and_capture(model, ids, mask, "blocks.*.attn.probs"),
            strict=True,
        ):
            for site, probs in sites.items():
                layer = int(site.split(".")[1])
                h, h_norm = attention_entropy(probs)  # (H,)
                n = probs.shape[-1]
                for head in range(h.shape[0]):
                    rows.append((seq_id, n, layer, head, "entropy", float(h[head])))
                    rows.append(
                        (seq_id, n, layer, head, "entropy_norm", float(h_norm[head]))
                    )
    return pd.DataFrame(rows, columns=["seq", "n", "layer", "head", "metric", "value"])


# ----------------------------------------------------------------------------
# Sigma-reparametrisation (Zhai et al. 2023).


def power_iteration(w: torch.Tensor, u: torch.Tensor, steps: int = 1):
    """``steps`` power iterations for the top singular pair of ``w`` (out, in).

    Returns unit vectors ``(u, v)`` with ``u^T w v ~ sigma_max(w)``; no gradient.
    """
    with torch.no_grad():
        for _ in range(steps):
            v = F.normalize(w.T @ u, dim=0)
            u = F.normalize(w @ v, dim=0)
        v = F.normalize(w.T @ u, dim=0)
    return u, v


class SigmaReparamLinear(nn.Module):
    """``y = x W_hat^T + b`` with ``W_hat = gamma / sigma_max(W) * W``.

    ``sigma_max`` is ``u^T W v`` with ``u`` kept between calls and one power
    iteration per training forward (as torch's spectral_norm); the gradient flows
    through ``W`` in ``u^T W v`` and ``W``, not through ``u, v``. ``gamma`` is a
    learnable scalar, initialised to ``sigma_max`` of the initial ``W`` so that the
    layer starts as the plain linear layer it replaces.
    """

    def __init__(self, d_in: int, d_out: int, init_std: float, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in) * init_std)
        self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None
        u0 = F.normalize(torch.randn(d_out), dim=0)
        u, v = power_iteration(self.weight.detach(), u0, steps=50)
        self.register_buffer("u", u)
        self.gamma = nn.Parameter((u @ self.weight.detach() @ v).clone())

    def effective_weight(self, update: bool | None = None) -> torch.Tensor:
        """``W_hat``; one power iteration first when training (or ``update``)."""
        if self.training if update is None else update:
            u, _ = power_iteration(self.weight.detach(), self.u, steps=1)
            self.u.copy_(u)
        _, v = power_iteration(self.weight.detach(), self.u, steps=0)
        sigma = self.u @ self.weight @ v
        return self.gamma / sigma * self.weight

    def forward(self, x):
        return F.linear(x, self.effective_weight(), self.bias)


# ----------------------------------------------------------------------------
# A small post-LN encoder (BERT's layer) trained from scratch.


@dataclass
class TinyEncoderConfig:
    vocab: int = 16  # token alphabet of the synthetic task
    n: int = 32  # sequence length
    d: int = 64  # model width
    n_heads: int = 4  # H
    n_layers: int = 2
    d_ff: int = 128  # MLP width
    init_std: float = 0.02  # BERT's initializer_range
    sigma_reparam: bool = False  # reparametrise W_Q and W_K


class Block(nn.Module):
    """BERT's post-LN layer: ``x <- LN1(x + MHA(x))``, ``x <- LN2(x + MLP(x))``."""

    def __init__(self, cfg: TinyEncoderConfig):
        super().__init__()
        d, std = cfg.d, cfg.init_std
        self.n_heads = cfg.n_heads
        if cfg.sigma_reparam:
            self.query = SigmaReparamLinear(d, d, std)
            self.key = SigmaReparamLinear(d, d, std)
        else:
            self.query, self.key = nn.Linear(d, d), nn.Linear(d, d)
        self.value, self.out = nn.Linear(d, d), nn.Linear(d, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.mlp = nn.Sequential(
            nn.Linear(d, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, d)
        )
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=std)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        B, n, d = x.shape
        H = self.n_heads
        d_k = d // H

        # Queries, keys and values per head: (B, H, n, d_k).
        q = self.query(x).view(B, n, H, d_k).transpose(1, 2)
        k = self.key(x).view(B, n, H, d_k).transpose(1, 2)
        v = self.value(x).view(B, n, H, d_k).transpose(1, 2)

        # Attention probabilities (B, H, n, n) and head outputs (B, n, H d_k).
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d_k), dim=-1)
        z = (att @ v).transpose(1, 2).reshape(B, n, d)

        # Mixed output through W_O, residual, LayerNorm; then the MLP sub-block.
        x = self.ln1(x + self.out(z))
        x = self.ln2(x + self.mlp(x))
        return x, att


class TinyEncoder(nn.Module):
    """Token and absolute position embeddings, LayerNorm, post-LN blocks, and a
    per-position classifier over the vocabulary."""

    def __init__(self, cfg: TinyEncoderConfig):
        super().__init__()
        self.tok = nn.Embedding(cfg.vocab, cfg.d)
        self.pos = nn.Embedding(cfg.n, cfg.d)
        nn.init.normal_(self.tok.weight, std=cfg.init_std)
        nn.init.normal_(self.pos.weight, std=cfg.init_std)
        self.ln = nn.LayerNorm(cfg.d)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.head = nn.Linear(cfg.d, cfg.vocab)
        nn.init.normal_(self.head.weight, std=cfg.init_std)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids):
        x = self.ln(self.tok(ids) + self.pos.weight[: ids.shape[1]])  # (B, n, d)
        probs = []
        for block in self.blocks:
            x, att = block(x)
            probs.append(att)
        return self.head(x), torch.stack(probs, dim=1)  # (B, L, H, n, n)


def qk_scale(block: Block) -> torch.Tensor:
    """Per head, ``sigma_max(W_Q^h W_K^h^T) / sqrt(d_k)``: Zhai et al.'s bound on
    how sharp the attention logits can get per unit of token norm. Shape (H,)."""

    def weight(lin):
        if isinstance(lin, SigmaReparamLinear):
            return lin.effective_weight(update=False)
        return lin.weight

    with torch.no_grad():
        H = block.n_heads
        w_q = weight(block.query)
        w_q = w_q.view(H, -1, w_q.shape[1])  # (H, d_k, d)
        w_k = weight(block.key)
        w_k = w_k.view(H, -1, w_k.shape[1])
        d_k = w_q.shape[1]
        bil = w_q.transpose(1, 2) @ w_k  # (H, d, d)
        return torch.linalg.matrix_norm(bil, ord=2) / math.sqrt(d_k)


def previous_token_batch(batch: int, cfg: TinyEncoderConfig, gen: torch.Generator):
    """Random token sequences; the target at position i is the token at i - 1
    (cyclically). Solving it needs attention that routes by position."""
    ids = torch.randint(0, cfg.vocab, (batch, cfg.n), generator=gen)
    return ids, torch.roll(ids, shifts=1, dims=1)


def train_entropy_run(
    cfg: TinyEncoderConfig,
    lr: float,
    steps: int,
    batch: int,
    seed: int,
    log_every: int,
    collapse_entropy: float,
) -> pd.DataFrame:
    """Train with Adam at ``lr``; log loss, accuracy and attention entropy.

    Columns: ``seed, step, metric, value``. Metrics: ``loss``, ``accuracy``,
    ``entropy_norm_mean`` (mean normalised entropy over layers and heads),
    ``entropy_norm_min`` (its smallest head), ``entropy_norm_min_layer`` (the
    smallest layer mean over heads), ``frac_heads_collapsed`` (heads below
    ``collapse_entropy``), ``qk_scale_max``; and ``entropy_norm.l{l}h{h}``.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = TinyEncoder(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rows = []
    for step in range(steps + 1):
        ids, target = previous_token_batch(batch, cfg, gen)
        logits, probs = model(ids)
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab), target.reshape(-1))

        # Log before the update, so step 0 is the initial model.
        if step % log_every == 0 or step == steps:
            _, h_norm = attention_entropy(probs.detach())  # (B, L, H)
            h_norm = h_norm.mean(dim=0)  # (L, H)
            acc = (logits.argmax(-1) == target).double().mean()
            scale = torch.cat([qk_scale(b) for b in model.blocks])
            stats = {
                "loss": float(loss.detach()),
                "accuracy": float(acc),
                "entropy_norm_mean": float(h_norm.mean()),
                "entropy_norm_min": float(h_norm.min()),
                "entropy_norm_min_layer": float(h_norm.mean(dim=1).min()),
                "frac_heads_collapsed": float(
                    (h_norm < collapse_entropy).double().mean()
                ),
                "qk_scale_max": float(scale.max()),
            }
            for (layer, head), value in zip(
                [(lay, hd) for lay in range(cfg.n_layers) for hd in range(cfg.n_heads)],
                h_norm.flatten().tolist(),
                strict=True,
            ):
                stats[f"entropy_norm.l{layer}h{head}"] = value
            rows += [(seed, step, k, v) for k, v in stats.items()]
        if step == steps:
            break

        opt.zero_grad()
        loss.backward()
        opt.step()
    return pd.DataFrame(rows, columns=["seed", "step", "metric", "value"])


def training_summary(log_df: pd.DataFrame, collapse_entropy: float) -> pd.DataFrame:
    """One row per arm: medians over seeds of the last logged step's metrics, and
    ``collapsed``: the median smallest layer-mean normalised entropy is below
    ``collapse_entropy`` (each query of that layer attends to fewer than
    ``n^collapse_entropy`` keys, in the effective-number sense)."""
    last = log_df[log_df.step == log_df.groupby(["arm", "seed"]).step.transform("max")]
    keep = [
        "loss",
        "accuracy",
        "entropy_norm_mean",
        "entropy_norm_min",
        "entropy_norm_min_layer",
        "frac_heads_collapsed",
        "qk_scale_max",
    ]
    wide = (
        last[last.metric.isin(keep)]
        .pivot_table(index=["arm", "seed"], columns="metric", values="value")
        .groupby("arm")
        .median()
    )
    wide["seeds"] = last.groupby("arm").seed.nunique()
    wide["collapsed"] = wide.entropy_norm_min_layer < collapse_entropy
    return wide.reset_index()


# ----------------------------------------------------------------------------
# Figures.


def plot_model_entropy(df: pd.DataFrame):
    """Mean normalised entropy over sequences, layer x head, one panel per model."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    models = list(dict.fromkeys(df.model))
    fig, axes = plt.subplots(
        1, len(models), squeeze=False, figsize=(4.2 * len(models), 3.4)
    )
    for ax, model in zip(axes[0], models, strict=True):
        sub = df[(df.model == model) & (df.metric == "entropy_norm")]
        grid = sub.groupby(["layer", "head"]).value.mean().unstack("head")
        sns.heatmap(
            grid,
            vmin=0,
            vmax=1,
            cmap="viridis",
            ax=ax,
            cbar_kws={"label": "entropy / log n"},
        )
        ax.set_title(model, fontsize=10)
    fig.tight_layout()
    return fig


def plot_training(log_df: pd.DataFrame, collapse_entropy: float):
    """Loss, mean and smallest-layer normalised entropy over training, per arm
    (mean over seeds, band = range)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    panels = {
        "loss": "training loss",
        "entropy_norm_mean": "mean entropy / log n",
        "entropy_norm_min_layer": "lowest layer: entropy / log n",
    }
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 3.4))
    for ax, (metric, label) in zip(axes, panels.items(), strict=True):
        sns.lineplot(
            data=log_df[log_df.metric == metric],
            x="step",
            y="value",
            hue="arm",
            errorbar=("pi", 100),
            ax=ax,
            legend=metric == "loss",
        )
        ax.set(ylabel=label)
        if metric == "entropy_norm_min_layer":
            ax.axhline(collapse_entropy, color="grey", ls=":", lw=1)
    fig.tight_layout()
    return fig


def plot_pgop_entropy(log_df: pd.DataFrame):
    """Attention entropy over PG-OP training (experiment E6), per task and arm."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sub = log_df[log_df.metric == "attn_entropy"]
    tasks = list(dict.fromkeys(sub.task)) or ["(none)"]
    fig, axes = plt.subplots(
        1, len(tasks), squeeze=False, figsize=(4.5 * len(tasks), 3.4)
    )
    for ax, task in zip(axes[0], tasks, strict=True):
        sns.lineplot(
            data=sub[sub.task == task],
            x="step",
            y="value",
            hue="arm",
            errorbar=("pi", 100),
            ax=ax,
        )
        ax.set(title=task, ylabel="attention entropy")
    fig.tight_layout()
    return fig
