"""The symmetry table of claim C6: each collapse phenomenon paired with a group acting
on one real layer, with the relative change ``||f(g.x) - g.f(x)||_F / ||f(x)||_F``
of transformers' own ``BertLayer`` (float64) under the vanilla forward pass and
under each symmetry-breaking mechanism (positions, ``A - 1 1^T / n``, PG-OP gates,
sigma-reparametrisation of W_Q and W_K).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from transformers import AttentionInterface
from transformers.models.bert.modeling_bert import eager_attention_forward

from rankcollapse.verdict import Verdict

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------
# The assignment (ours): phenomenon -> symmetry -> mechanism that breaks it.


@dataclass(frozen=True)
class Symmetry:
    name: str  # key in tables
    group: str  # the group, in the paper's symbols
    action: str  # how it acts on the layer's input or weights


@dataclass(frozen=True)
class TableRow:
    phenomenon: str
    symmetry: str  # the Symmetry.name whose vanilla check this row reports
    also_vanilla: tuple[str, ...]  # further symmetries the vanilla check includes
    degenerate_set: str  # the degenerate set the symmetry protects
    mechanism: str  # the mechanism whose check this row reports
    mechanism_text: str


SYMMETRIES = {
    s.name: s
    for s in [
        Symmetry(
            "tokens",
            "S_n (token permutations)",
            "X -> P X; the layer is equivariant: f(P X) = P f(X)",
        ),
        Symmetry(
            "value_shift",
            "R^{H d_k} (value translations)",
            "b_V^h -> b_V^h + c_h, b_O -> b_O - sum_h c_h W_O^h; "
            "invariant because A 1 = 1",
        ),
        Symmetry(
            "heads",
            "S_H (head permutations)",
            "permute heads consistently in W_Q, W_K, W_V, W_O and biases",
        ),
        Symmetry(
            "vo_gauge",
            "GL(d_k)^H (per-head value gauge)",
            "W_V^h -> W_V^h G_h, b_V^h -> b_V^h G_h, W_O^h -> G_h^-1 W_O^h",
        ),
        Symmetry(
            "qk_gauge",
            "GL(d_k)^H (per-head query-key gauge)",
            "W_Q^h -> W_Q^h M_h, W_K^h -> W_K^h M_h^-T (and their biases)",
        ),
    ]
}

MECHANISMS = {
    "vanilla": "the layer as trained (transformers' BertLayer)",
    "positions": "the model's absolute position embeddings added to the layer "
    "input, X -> X + P_pos (as the embedding layer adds them)",
    "centred": "attention A replaced by A - 1 1^T / n (Nait Saada et al.'s remedy)",
    "pgop": "PG-OP gates g_ih = 2 sigmoid(p_i . w_h + c_h) on each head output",
    "sigma_reparam": "W_Q, W_K replaced by gamma W / sigma_max(W), gamma fixed at "
    "the trained weights' sigma_max (Zhai et al.)",
}

ROWS = [
    TableRow(
        "rank collapse in depth",
        "tokens",
        (),
        "Fix(S_n) = {1 x^T}: all tokens equal (affine rank 0); an equivariant map "
        "sends it into itself",
        "positions",
        "absolute position embeddings tie each token to its slot",
    ),
    TableRow(
        "rank collapse in width",
        "value_shift",
        (),
        "the constant mode span(1): A (1 c^T) = 1 c^T is kept at gain 1 while the "
        "rest shrinks with the spectral gap",
        "centred",
        "subtracting 1 1^T / n sends A 1 to 0",
    ),
    TableRow(
        "head-channel non-identifiability",
        "heads",
        ("vo_gauge",),
        "the fibre of head outputs with one mixed output: n(H-1)d_k free "
        "directions; heads have no canonical labels",
        "pgop",
        "position gates differ across heads, so head labels matter",
    ),
    TableRow(
        "entropy collapse",
        "qk_gauge",
        (),
        "the non-compact orbits (W_Q M, W_K M^-T): factor scales the function does "
        "not see, along which sigma_max(W_Q W_K^T) and the sharpness of A grow "
        "unchecked",
        "sigma_reparam",
        "each factor is pinned to its own spectral norm, so only the orthogonal "
        "and scalar part of the gauge survives",
    ),
]


# ----------------------------------------------------------------------------
# Random group elements.


def random_permutation(n: int, gen: torch.Generator) -> torch.Tensor:
    """A uniformly random permutation of ``range(n)`` that is not the identity."""
    if n < 2:
        raise ValueError("a permutation that moves something needs n >= 2")
    while True:
        perm = torch.randperm(n, generator=gen)
        if not torch.equal(perm, torch.arange(n)):
            return perm


def random_invertible(k: int, condition: float, count: int, gen: torch.Generator):
    """``count`` matrices ``U diag(s) V^T`` (k x k) with Haar-random orthogonal U, V
    and singular values log-spaced from ``condition^-1/2`` to ``condition^1/2``."""

    def haar():
        q, r = torch.linalg.qr(
            torch.randn(count, k, k, generator=gen, dtype=torch.float64)
        )
        return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)

    s = torch.logspace(-0.5, 0.5, k, base=condition, dtype=torch.float64)
    return haar() @ torch.diag(s) @ haar().transpose(-1, -2)


# ----------------------------------------------------------------------------
# Group actions on a BertLayer's weights (in place, on a float64 copy).
# nn.Linear stores W^T: query.weight is (H d_k, d), so head h's W_Q^h (d, d_k) is
# query.weight[h d_k:(h+1) d_k].T, and W_O^h (d_k, d) is dense.weight[:, block].T.


def _blocks(linear, H: int):
    """Views of an input projection's weight (H, d_k, d) and bias (H, d_k)."""
    return linear.weight.data.view(
        H, -1, linear.weight.shape[1]
    ), linear.bias.data.view(H, -1)


@torch.no_grad()
def permute_heads(layer, perm: torch.Tensor) -> None:
    att, dense = layer.attention.self, layer.attention.output.dense
    H = att.num_attention_heads
    for lin in (att.query, att.key, att.value):
        w, b = _blocks(lin, H)
        w.copy_(w[perm].clone())
        b.copy_(b[perm].clone())
    w_o = dense.weight.data.view(dense.weight.shape[0], H, -1)  # (d, H, d_k)
    w_o.copy_(w_o[:, perm].clone())


@torch.no_grad()
def vo_gauge(layer, g: torch.Tensor) -> None:
    """``W_V^h -> W_V^h G_h``, ``b_V^h -> b_V^h G_h``, ``W_O^h -> G_h^-1 W_O^h``."""
    att, dense = layer.attention.self, layer.attention.output.dense
    H = att.num_attention_heads
    w, b = _blocks(att.value, H)
    w.copy_(g.transpose(-1, -2) @ w)
    b.copy_((b.unsqueeze(1) @ g).squeeze(1))
    w_o = dense.weight.data.view(dense.weight.shape[0], H, -1).transpose(0, 1)
    w_o.copy_(w_o @ torch.linalg.inv(g).transpose(-1, -2))  # (H, d, d_k)


@torch.no_grad()
def qk_gauge(layer, m: torch.Tensor) -> None:
    """``W_Q^h -> W_Q^h M_h``, ``W_K^h -> W_K^h M_h^-T``, biases alike."""
    att = layer.attention.self
    H = att.num_attention_heads
    m_inv_t = torch.linalg.inv(m).transpose(-1, -2)
    for lin, mat in ((att.query, m), (att.key, m_inv_t)):
        w, b = _blocks(lin, H)
        w.copy_(mat.transpose(-1, -2) @ w)
        b.copy_((b.unsqueeze(1) @ mat).squeeze(1))


@torch.no_grad()
def value_shift(layer, c: torch.Tensor) -> None:
    """``b_V^h -> b_V^h + c_h`` and ``b_O -> b_O - sum_h c_h W_O^h``; c is (H, d_k)."""
    att, dense = layer.attention.self, layer.attention.output.dense
    _, b = _blocks(att.value, att.num_attention_heads)
    b.add_(c)
    dense.bias.data.sub_(dense.weight.data @ c.reshape(-1))


# ----------------------------------------------------------------------------
# Mechanisms, each a context manager around a float64 BertLayer.


def centred_attention_forward(
    module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs
):
    """Eager attention with ``A - 1 1^T / n`` in place of ``A`` (n unmasked keys)."""
    _, attn = eager_attention_forward(
        module,
        query,
        key,
        value,
        attention_mask,
        scaling=scaling,
        dropout=0.0,
        **kwargs,
    )
    if attention_mask is None:
        attn = attn - 1.0 / attn.shape[-1]
    else:
        valid = (attention_mask == 0).to(attn.dtype).expand_as(attn)
        attn = attn - valid / valid.sum(dim=-1, keepdim=True)
    out = torch.matmul(attn, value).transpose(1, 2).contiguous()
    return out, attn


CENTRED = "rankcollapse_centred"
AttentionInterface.register(CENTRED, centred_attention_forward)


def pgop_gates(positions: torch.Tensor, w: torch.Tensor, c: torch.Tensor):
    """``g_ih = 2 sigmoid(p_i . w_h + c_h)``: positions (n, d), w (H, d), c (H,)."""
    return 2.0 * torch.sigmoid(positions @ w.T + c)  # (n, H)


@dataclass
class MechanismParams:
    """What the mechanisms need besides the layer: the model's position table,
    PG-OP gate parameters, and sigma_max of the trained W_Q, W_K (the fixed gamma)."""

    positions: torch.Tensor  # (max positions, d)
    gate_w: torch.Tensor  # (H, d)
    gate_c: torch.Tensor  # (H,)
    gamma_q: float
    gamma_k: float
    cache: dict = field(default_factory=dict)  # id(layer) -> reparametrised W_Q, W_K

    def reparametrised(self, att) -> tuple[torch.Tensor, torch.Tensor]:
        """``gamma W / sigma_max(W)`` for the layer's current W_Q and W_K, cached."""
        key = id(att)
        if key not in self.cache:
            self.cache[key] = tuple(
                gamma
                / torch.linalg.matrix_norm(lin.weight.detach(), ord=2)
                * lin.weight.detach()
                for lin, gamma in ((att.query, self.gamma_q), (att.key, self.gamma_k))
            )
        return self.cache[key]


@contextlib.contextmanager
def mechanism(layer, name: str, params: MechanismParams, n: int):
    """Switch ``layer`` to mechanism ``name`` for the duration; yields the input
    map (``positions`` adds the position table, the others leave X alone)."""
    att = layer.attention.self
    identity = lambda x: x  # noqa: E731
    if name == "vanilla":
        yield identity
    elif name == "positions":
        yield lambda x: x + params.positions[:n]
    elif name == "centred":
        old = att.config._attn_implementation
        att.config._attn_implementation = CENTRED
        try:
            yield identity
        finally:
            att.config._attn_implementation = old
    elif name == "pgop":
        gates = pgop_gates(params.positions[:n], params.gate_w, params.gate_c)
        gates = gates.repeat_interleave(att.attention_head_size, dim=1)  # (n, H d_k)
        handle = layer.attention.output.dense.register_forward_pre_hook(
            lambda mod, args: (args[0] * gates,)
        )
        try:
            yield identity
        finally:
            handle.remove()
    elif name == "sigma_reparam":
        saved = (att.query.weight.data.clone(), att.key.weight.data.clone())
        w_q, w_k = params.reparametrised(att)
        att.query.weight.data.copy_(w_q)
        att.key.weight.data.copy_(w_k)
        try:
            yield identity
        finally:
            att.query.weight.data.copy_(saved[0])
            att.key.weight.data.copy_(saved[1])
    else:
        raise ValueError(f"mechanism {name!r}: expected one of {sorted(MECHANISMS)}")


# ----------------------------------------------------------------------------
# The checks.


@dataclass
class CheckConfig:
    gauge_condition: float = 10.0  # condition number of G_h and M_h
    shift_std: float = 1.0  # std of the value translations c_h
    gate_std: float = 0.5  # std of the PG-OP gate parameters w_h, c_h
    seed: int = 0


def layer_checks(
    layer,
    xs: list[torch.Tensor],
    positions: torch.Tensor,
    cfg: CheckConfig,
    layer_index: int = 0,
) -> pd.DataFrame:
    """Every (mechanism, symmetry) relative change of one layer, per sequence.

    ``layer`` is a transformers ``BertLayer`` (left untouched; float64 copies are
    used); ``xs`` are its real inputs, one (n, d) matrix per sequence. Columns:
    ``layer, seq, mechanism, symmetry, value``.
    """
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + layer_index)
    base = copy.deepcopy(layer).double().eval()
    dev = next(base.parameters()).device
    att = base.attention.self
    H, d_k = att.num_attention_heads, att.attention_head_size
    d = att.query.weight.shape[1]

    # One group element per weight symmetry (drawn on the CPU, so that every device
    # sees the same elements), and the layer it produces.
    f64 = {"dtype": torch.float64}
    actions = {
        "value_shift": (
            value_shift,
            cfg.shift_std * torch.randn(H, d_k, generator=gen, **f64),
        ),
        "heads": (permute_heads, random_permutation(H, gen)),
        "vo_gauge": (vo_gauge, random_invertible(d_k, cfg.gauge_condition, H, gen)),
        "qk_gauge": (qk_gauge, random_invertible(d_k, cfg.gauge_condition, H, gen)),
    }
    moved = {}
    for name, (act, element) in actions.items():
        moved[name] = copy.deepcopy(base)
        act(moved[name], element.to(dev))

    # Mechanism parameters: gates, and sigma_max of the trained W_Q, W_K.
    params = MechanismParams(
        positions=positions.to(dev, torch.float64),
        gate_w=cfg.gate_std * torch.randn(H, d, generator=gen, **f64).to(dev),
        gate_c=cfg.gate_std * torch.randn(H, generator=gen, **f64).to(dev),
        gamma_q=float(torch.linalg.matrix_norm(att.query.weight.detach(), ord=2)),
        gamma_k=float(torch.linalg.matrix_norm(att.key.weight.detach(), ord=2)),
    )

    def run(module, name, x):
        with mechanism(module, name, params, x.shape[0]) as inp, torch.no_grad():
            return module(inp(x).unsqueeze(0))[0]

    rows = []
    for seq, x in enumerate(xs):
        x = x.to(dev, torch.float64)
        n = x.shape[0]
        perm = random_permutation(n, gen).to(dev)
        for mech in MECHANISMS:
            y = run(base, mech, x)
            scale = y.norm()

            # Token permutations act on the input; the layer must permute the output.
            err = (run(base, mech, x[perm]) - y[perm]).norm() / scale
            rows.append((layer_index, seq, mech, "tokens", float(err)))

            # Weight symmetries act on the parameters; the output must not move.
            for name, module in moved.items():
                err = (run(module, mech, x) - y).norm() / scale
                rows.append((layer_index, seq, mech, name, float(err)))
    return pd.DataFrame(
        rows, columns=["layer", "seq", "mechanism", "symmetry", "value"]
    )


def model_checks(
    model, xs_per_layer: list[list[torch.Tensor]], cfg: CheckConfig
) -> pd.DataFrame:
    """``layer_checks`` for every layer of a BertModel; ``xs_per_layer[l]`` holds
    the real inputs of layer l."""
    positions = model.embeddings.position_embeddings.weight.detach()
    frames = [
        layer_checks(layer, xs_per_layer[i], positions, cfg, i)
        for i, layer in enumerate(model.encoder.layer)
    ]
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------
# Tables and the verdict, from the checks only.


def classify(
    max_err: float, min_err: float, symmetry_tol: float, break_tol: float
) -> str:
    """``kept`` when every case is below ``symmetry_tol``, ``broken`` when every
    case is at least ``break_tol``, ``mixed`` otherwise."""
    if max_err <= symmetry_tol:
        return "kept"
    if min_err >= break_tol:
        return "broken"
    return "mixed"


def cross_table(
    checks: pd.DataFrame, symmetry_tol: float, break_tol: float
) -> pd.DataFrame:
    """Per model, mechanism and symmetry: the largest and smallest relative change
    over layers and sequences, and ``kept`` / ``broken`` / ``mixed``."""
    g = checks.groupby(["model", "mechanism", "symmetry"])["value"]
    out = g.agg(max_error="max", min_error="min").reset_index()
    out["status"] = [
        classify(a, b, symmetry_tol, break_tol)
        for a, b in zip(out.max_error, out.min_error, strict=True)
    ]
    return out


def definitions_table() -> pd.DataFrame:
    """The assignment itself, one row per phenomenon: group and action, the
    degenerate set it protects, the breaking mechanism and how it breaks it."""
    rows = []
    for r in ROWS:
        syms = (r.symmetry, *r.also_vanilla)
        rows.append(
            {
                "phenomenon": r.phenomenon,
                "group": " x ".join(SYMMETRIES[s].group for s in syms),
                "action": "; ".join(SYMMETRIES[s].action for s in syms),
                "degenerate_set": r.degenerate_set,
                "mechanism": r.mechanism,
                "how_it_breaks": f"{MECHANISMS[r.mechanism]}: {r.mechanism_text}",
            }
        )
    return pd.DataFrame(rows)


def symmetry_table(cross: pd.DataFrame) -> pd.DataFrame:
    """One row per phenomenon and model: the vanilla check (largest change of the
    vanilla layer under the row's group) and the break check (smallest change
    under the row's mechanism), with their status."""
    rows = []
    for model, c in cross.groupby("model", sort=False):
        cell = c.set_index(["mechanism", "symmetry"])
        for r in ROWS:
            syms = (r.symmetry, *r.also_vanilla)
            vanilla = cell.loc[[("vanilla", s) for s in syms]]
            broken = cell.loc[(r.mechanism, r.symmetry)]
            rows.append(
                {
                    "phenomenon": r.phenomenon,
                    "model": model,
                    "symmetry": "+".join(syms),
                    "vanilla_check": float(vanilla.max_error.max()),
                    "vanilla_has_symmetry": bool((vanilla.status == "kept").all()),
                    "mechanism": r.mechanism,
                    "break_check": float(broken.min_error),
                    "mechanism_breaks_it": bool(broken.status == "broken"),
                }
            )
    return pd.DataFrame(rows)


def distinct_patterns(cross: pd.DataFrame) -> dict[str, bool]:
    """Per model: do the rows' symmetries differ in which mechanisms break them?

    Each row's symmetry gets its pattern, the status under every mechanism; the
    symmetries are told apart by the pipeline when no two patterns are equal.
    """
    out = {}
    for model, c in cross.groupby("model", sort=False):
        status = c.set_index(["symmetry", "mechanism"]).status
        patterns = [tuple(status[r.symmetry].sort_index()) for r in ROWS]
        out[model] = len(set(patterns)) == len(patterns)
    return out


def verdict_c6(
    table: pd.DataFrame,
    cross: pd.DataFrame,
    width: pd.DataFrame,
    entropy: pd.DataFrame,
    cfg: dict,
) -> Verdict:
    """C6 from the symmetry table, the cross table and E7's two phenomena.

    ``table``: ``symmetry_table`` rows; ``cross``: ``cross_table``; ``width``:
    ``width.gap_summary`` rows (model, weight_init, logits, mixing,
    ratio_at_n_min, ratio_at_n_max); ``entropy``: one row per training arm with
    ``arm`` and ``collapsed`` (bool). ``cfg`` keys: ``width_gap_ratio`` (a gap is
    present when the median ``sigma_2 / sigma_1`` at the largest n is below it),
    ``vanilla_arm``, ``remedy_arm``.

    confirmed: for every model, every row's vanilla forward pass has its symmetry,
    its mechanism breaks it, the four symmetries are told apart by the mechanisms,
    and both consequences hold (the width gap opens with n for the softmax and not
    for the remedy; the vanilla run collapses and the sigma-reparam run does not).
    qualified: every row passes both checks for at least one model and the
    symmetries are distinct there, but some model, row or consequence fails.
    not supported: otherwise.
    """
    per_row = table.assign(ok=table.vanilla_has_symmetry & table.mechanism_breaks_it)
    rows_ok = per_row.groupby("model").ok.all()
    distinct = distinct_patterns(cross)
    models_ok = [m for m in rows_ok.index if rows_ok[m] and distinct.get(m, False)]

    # Width: the softmax gap opens with n (ratio falls and ends below the rule's
    # level); the remedy's ratio at the largest n stays at or above that level.
    level = cfg["width_gap_ratio"]
    w_bil = width[width.logits == "bilinear"]
    soft = w_bil[w_bil.mixing == "softmax"]
    cent = w_bil[w_bil.mixing == "centred"]
    gap_opens = (
        bool(
            (
                (soft.ratio_at_n_max < soft.ratio_at_n_min)
                & (soft.ratio_at_n_max < level)
            ).all()
        )
        and len(soft) > 0
    )
    remedy_closes = bool((cent.ratio_at_n_max >= level).all()) and len(cent) > 0

    # Entropy: the vanilla arm collapses, the sigma-reparam arm does not.
    arm = entropy.set_index("arm").collapsed
    entropy_ok = bool(arm.get(cfg["vanilla_arm"], False)) and not bool(
        arm.get(cfg["remedy_arm"], True)
    )

    failing = per_row.loc[~per_row.ok, ["model", "phenomenon"]]
    evidence = {
        "rows_passing": f"{int(per_row.ok.sum())} of {len(per_row)}",
        "symmetries_distinct": distinct,
        "width_gap_opens_with_n": gap_opens,
        "width_remedy_closes_gap": remedy_closes,
        "entropy_collapse_without_and_not_with_sigma_reparam": entropy_ok,
        "largest_vanilla_check": float(table.vanilla_check.max()),
        "smallest_break_check": float(table.break_check.min()),
    }
    if not failing.empty:
        evidence["failing_rows"] = "; ".join(
            f"{m}: {p}" for m, p in failing.itertuples(index=False)
        )

    all_models = len(models_ok) == len(rows_ok) and len(rows_ok) > 0
    if all_models and gap_opens and remedy_closes and entropy_ok:
        verdict = "confirmed"
        summary = (
            "Each of the four phenomena is paired with its own exact "
            "symmetry of the layer, which the vanilla forward pass keeps to "
            "round-off and its mechanism breaks; the mechanisms tell the "
            "symmetries apart, and both measured consequences hold."
        )
    elif models_ok:
        verdict = "qualified"
        failed = [
            k
            for k, v in {
                "width gap": gap_opens and remedy_closes,
                "entropy collapse": entropy_ok,
            }.items()
            if not v
        ]
        if not all_models:
            failed.append(
                "rows on " + ", ".join(m for m in rows_ok.index if m not in models_ok)
            )
        summary = (
            "The symmetry table holds (both checks, distinct symmetries) on "
            + ", ".join(models_ok)
            + "; fails: "
            + "; ".join(failed)
            + "."
        )
    else:
        verdict = "not supported"
        summary = (
            "No model passes every row of the symmetry table with distinct symmetries."
        )
    return Verdict("C6", verdict, summary, evidence=evidence, experiments=["E7", "E8"])


def plot_cross(cross: pd.DataFrame):
    """log10 of the largest relative change, mechanism x symmetry, per model."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    models = list(dict.fromkeys(cross.model))
    fig, axes = plt.subplots(
        1, len(models), squeeze=False, figsize=(5.2 * len(models), 3.6)
    )
    for ax, model in zip(axes[0], models, strict=True):
        grid = (
            cross[cross.model == model]
            .pivot(index="mechanism", columns="symmetry", values="max_error")
            .reindex(index=list(MECHANISMS), columns=list(SYMMETRIES))
        )
        sns.heatmap(
            np.log10(grid.clip(lower=1e-17)),
            vmin=-17,
            vmax=0,
            cmap="magma",
            annot=True,
            fmt=".1f",
            ax=ax,
            cbar_kws={"label": "log10 relative change"},
        )
        ax.set_title(model, fontsize=10)
    fig.tight_layout()
    return fig
