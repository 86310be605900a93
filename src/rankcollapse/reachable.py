"""The attention-reachable subspace T(X) of a post-LN layer, and the energy outside it.

Attention rows sum to one, so every row of ``LN1(X + MHA(X))`` lies in
``T(X) = (S + sum_h S W_V^h W_O^h + span(b)) P Gamma + span(beta1)``, with
``S = rowspace(X)``, ``b = sum_h b_V^h W_O^h + b_O``: ``dim T(X) <= n(H+1) + 2``;
using the tokens' affine hull instead of S tightens it to ``(n-1)(H+1) + 2``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import scipy.linalg
import torch

from rankcollapse.capture import run_and_capture
from rankcollapse.models import LayerWeights, layer_weights
from rankcollapse.verdict import Verdict

# A generator direction counts when the pivoted-QR diagonal exceeds this times the
# largest one, after every generator row is scaled to unit length (float64).
BASIS_RTOL = 1e-10

# The subspaces a token matrix is compared with (names used in every table):
#   input_span  rowspace(X), the literal "linear span" of the layer's input tokens
#   affine      T(X) with the sum-to-one constraint used: dim <= (n-1)(H+1) + 2
#   linear      T(X) as in the spec: dim <= n(H+1) + 2
SUBSPACES = ("input_span", "affine", "linear")

# Sites of one layer read against T(X) of its input (names from rankcollapse.capture).
LAYER_SITES = {"attn_block": "ln1.out", "mlp": "mlp.out", "layer": "out"}


# ----------------------------------------------------------------------------
# Orthonormal bases.


def span(rows: torch.Tensor, rtol: float = BASIS_RTOL) -> torch.Tensor:
    """Orthonormal basis (d, k) of the span of ``rows`` (m, d), by pivoted QR.

    Rows are scaled to unit length first, so generators of very different size
    (tokens, value-mapped tokens, biases) count alike; zero rows are dropped.
    """
    g = rows.detach().to(torch.float64).reshape(-1, rows.shape[-1])
    norms = g.norm(dim=1, keepdim=True)
    g = g[norms.squeeze(1) > 0] / norms[norms.squeeze(1) > 0]
    d = g.shape[1]
    if g.shape[0] == 0:
        return torch.zeros(d, 0, dtype=torch.float64)

    # Columns of G^T are the generators; |R_ii| falls with the pivoting.
    q, r, _ = scipy.linalg.qr(g.numpy().T, mode="economic", pivoting=True)
    diag = np.abs(np.diag(r))
    k = int((diag > rtol * diag[0]).sum())
    return torch.from_numpy(np.ascontiguousarray(q[:, :k]))


def energy_outside(z: torch.Tensor, basis: torch.Tensor) -> tuple[float, float]:
    """Fraction of ``||Z||_F^2`` outside span(basis), and the largest per-token one."""
    z = z.detach().to(torch.float64)
    resid = z - (z @ basis) @ basis.T
    total = float((z**2).sum())
    per_token = (resid**2).sum(dim=1) / (z**2).sum(dim=1).clamp_min(1e-300)
    return float((resid**2).sum()) / max(total, 1e-300), float(per_token.max())


# ----------------------------------------------------------------------------
# The reachable subspace of one layer.


def model_weights(model) -> list[LayerWeights]:
    """``layer_weights`` of every layer, float64 on the CPU (bases use LAPACK)."""
    out = []
    for layer in model.encoder.layer:
        w = layer_weights(layer)
        moved = {f.name: getattr(w, f.name) for f in dataclasses.fields(w)}
        out.append(
            LayerWeights(
                **{k: v.cpu() if torch.is_tensor(v) else v for k, v in moved.items()}
            )
        )
    return out


def value_mapped(rows: torch.Tensor, w: LayerWeights) -> torch.Tensor:
    """``rows M_h`` with ``M_h = W_V^h W_O^h`` for every head: (m, d) -> (H, m, d).

    Through the head dimension (``rows W_V^h`` first), so M_h is never formed.
    """
    z = torch.einsum("md,hdk->hmk", rows, w.W_V)  # (H, m, d_k)
    return torch.einsum("hmk,hkd->hmd", z, w.W_O)


def value_bias(w: LayerWeights) -> torch.Tensor:
    """``b = sum_h b_V^h W_O^h + b_O``, the bias every MHA row carries: (d,)."""
    return torch.einsum("hk,hkd->d", w.b_V, w.W_O) + w.b_O


def reachable_generators(x: torch.Tensor, w: LayerWeights, kind: str) -> torch.Tensor:
    """Rows spanning T(X) for a token matrix (or basis rows) ``x`` (n, d).

    ``linear`` (the spec's): ``(S + sum_h S M_h + span(b)) P Gamma + span(beta1)``.
    ``affine``: attention rows sum to one, so the tokens enter only through
    their affine hull, ``xbar + rowspace(X - 1 xbar^T)``; see ``affine_step``.
    """
    x = x.detach().to(torch.float64)
    if kind == "affine":
        xbar = x.mean(dim=0)
        directions = affine_step(xbar, x - xbar, w)
        return torch.cat([directions, w.beta1[None]])
    if kind != "linear":
        raise ValueError(f"kind {kind!r}: expected linear or affine")

    # The residual stream before LN1: tokens, value-mapped tokens, the bias b.
    d = x.shape[1]
    u = torch.cat([x, value_mapped(x, w).reshape(-1, d), value_bias(w)[None]])
    # (n(H+1)+1, d)

    # LN1 in matrix form: centre each row over features (P), scale by gamma.
    u = (u - u.mean(dim=1, keepdim=True)) * w.gamma1
    return torch.cat([u, w.beta1[None]])


def affine_step(
    anchor: torch.Tensor, directions: torch.Tensor, w: LayerWeights
) -> torch.Tensor:
    """Directions V' of the set LN1(X + MHA(X)) for rows of X in ``anchor + V``.

    A convex combination of points of ``p + V`` stays in it, so every row of
    ``X + MHA(X)`` is ``c + v_1 + sum_h v_h M_h`` with ``c = p (I + sum_h M_h) +
    b`` and ``v`` in V; LN1 maps it into ``beta1 + V'``, with
    ``V' = (V + sum_h V M_h + span(c)) P Gamma`` and ``dim V' <= (H+1) dim V + 1``.
    Returns rows spanning V'.
    """
    c = anchor + value_mapped(anchor[None], w).sum(dim=0)[0] + value_bias(w)
    d = directions.shape[1]
    u = torch.cat([directions, value_mapped(directions, w).reshape(-1, d), c[None]])
    return (u - u.mean(dim=1, keepdim=True)) * w.gamma1


def reachable_subspace(
    x, w: LayerWeights, kind: str = "linear", rtol: float = BASIS_RTOL
) -> torch.Tensor:
    """Orthonormal basis (d, k) of T(X); see ``reachable_generators``."""
    return span(reachable_generators(x, w, kind), rtol)


def propagate(
    x0: torch.Tensor,
    weights: list[LayerWeights],
    rtol: float = BASIS_RTOL,
    range_dims: list[int] | None = None,
):
    """Bases of T_1, T_2, ...: the spans holding the attention-only stack's states.

    ``T_l = V_l + span(beta1_l)``: the first layer takes the tokens' affine hull,
    every later one the affine set ``beta1_{l-1} + V_{l-1}`` its predecessor's
    LayerNorm writes into (``affine_step``). Yields one basis per layer and
    stops after the first that fills ``ln_range`` (all LN1 can ever output);
    ``range_dims`` are those dimensions per layer, when already known.
    """
    if range_dims is None:
        range_dims = [ln_range(w, rtol).shape[1] for w in weights]
    x0 = x0.detach().to(torch.float64)
    anchor, directions = x0.mean(dim=0), x0 - x0.mean(dim=0)
    for w, full in zip(weights, range_dims, strict=True):
        v = span(affine_step(anchor, directions, w), rtol)
        basis = span(torch.cat([v.T, w.beta1[None]]), rtol)
        yield basis
        if basis.shape[1] >= full:
            return
        anchor, directions = w.beta1, v.T


def ln_range(w: LayerWeights, rtol: float = BASIS_RTOL) -> torch.Tensor:
    """Basis of the span of every output LN1 can give: ``1^perp Gamma + span(beta1)``.

    Its dimension is d when beta1 is off the hyperplane ``1^perp Gamma``, else
    d - 1 (e.g. a fresh initialisation, gamma = 1 and beta = 0).
    """
    d = w.gamma1.shape[0]
    p = torch.eye(d, dtype=torch.float64) - 1.0 / d
    return span(torch.cat([p * w.gamma1, w.beta1[None]]), rtol)


def dim_bound(n: int, n_heads: int, kind: str) -> int:
    """Upper bound on dim T(X): ``n(H+1)+2`` (linear) or ``(n-1)(H+1)+2`` (affine)."""
    return (n if kind == "linear" else n - 1) * (n_heads + 1) + 2


def max_length(d: int, n_heads: int, kind: str = "linear") -> int:
    """Largest n whose bound stays below d, so that T(X) is a proper subspace."""
    n = (d - 3) // (n_heads + 1)
    return n if kind == "linear" else n + 1


def regime(seqs, d: int, n_heads: int, max_sequences: int | None):
    """The sequences short enough that ``n(H+1)+2 < d``, and a one-row summary.

    Returns the first ``max_sequences`` of them and a dict with ``n_max``,
    ``corpus_sequences``, ``in_regime``, ``share_in_regime`` and ``analysed``.
    """
    n_max = max_length(d, n_heads, "linear")
    inside = [s for s in seqs if s.n <= n_max]
    chosen = inside[:max_sequences] if max_sequences else inside
    summary = dict(
        d=d,
        H=n_heads,
        n_max=n_max,
        corpus_sequences=len(seqs),
        in_regime=len(inside),
        share_in_regime=len(inside) / max(len(seqs), 1),
        analysed=len(chosen),
    )
    return chosen, summary


def random_encoder(architecture: dict, seed: int):
    """A BERT encoder at random initialisation (eager attention, eval mode)."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(**architecture)
    torch.manual_seed(seed)
    return AutoModel.from_config(config, attn_implementation="eager").eval()


# ----------------------------------------------------------------------------
# Per sequence and layer: energy of each site outside each subspace.


def layer_energy_rows(
    sites: dict, weights: list[LayerWeights], rtol: float = BASIS_RTOL
) -> list[dict]:
    """Rows (layer, subspace, site, metric, value) for one captured sequence.

    ``sites`` holds ``blocks.{l}.in``, ``.ln1.out``, ``.mlp.out``, ``.out``.
    Metrics: ``dim`` and ``bound`` of each subspace (site None),
    ``energy_outside`` and ``energy_outside_max_token`` of each site.
    """
    rows = []
    for l, w in enumerate(weights):
        x = sites[f"blocks.{l}.in"]
        n, d = x.shape
        bases = {
            "input_span": span(x, rtol),
            "affine": reachable_subspace(x, w, "affine", rtol),
            "linear": reachable_subspace(x, w, "linear", rtol),
        }
        bounds = {
            "input_span": n,
            "affine": dim_bound(n, w.n_heads, "affine"),
            "linear": dim_bound(n, w.n_heads, "linear"),
        }
        for sub, q in bases.items():
            rows.append(
                dict(
                    layer=l,
                    subspace=sub,
                    site=None,
                    metric="dim",
                    value=float(q.shape[1]),
                )
            )
            rows.append(
                dict(
                    layer=l,
                    subspace=sub,
                    site=None,
                    metric="bound",
                    value=float(min(bounds[sub], x.shape[1])),
                )
            )
            for name, site in LAYER_SITES.items():
                total, worst = energy_outside(sites[f"blocks.{l}.{site}"], q)
                rows.append(
                    dict(
                        layer=l,
                        subspace=sub,
                        site=name,
                        metric="energy_outside",
                        value=total,
                    )
                )
                rows.append(
                    dict(
                        layer=l,
                        subspace=sub,
                        site=name,
                        metric="energy_outside_max_token",
                        value=worst,
                    )
                )
    return rows


def layer_energy_table(
    model, seqs, weights, batch_size: int, rtol: float = BASIS_RTOL, progress=None
) -> pd.DataFrame:
    """``layer_energy_rows`` for every sequence of ``seqs`` (corpus.Sequence)."""
    from rankcollapse.corpus import batches

    n_layers = len(weights)
    sites = [
        f"blocks.{l}.{s}"
        for l in range(n_layers)
        for s in ("in", *LAYER_SITES.values())
    ]
    pad = model.config.pad_token_id or 0
    out = []
    for seq_ids, ids, mask in batches(seqs, batch_size, pad):
        for sid, captured in zip(
            seq_ids, run_and_capture(model, ids, mask, sites), strict=True
        ):
            n = captured["blocks.0.in"].shape[0]
            for row in layer_energy_rows(
                {k: v.cpu() for k, v in captured.items()}, weights, rtol
            ):
                out.append(dict(seq=sid, n=n, d=model.config.hidden_size, **row))
            if progress is not None:
                progress.update(1)
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------
# Through an attention-only stack from X0.


@torch.no_grad()
def attention_only_states(model, input_ids: torch.Tensor, depth: int) -> list:
    """``X_l = LN1(X_{l-1} + MHA(X_{l-1}))`` from X0 with the model's own modules.

    One unpadded sequence ``input_ids`` (n,); returns X_1 .. X_depth, each (n, d).
    """
    device = next(model.parameters()).device
    x = model.embeddings(input_ids=input_ids[None].to(device))  # (1, n, d)
    states = []
    for layer in model.encoder.layer[:depth]:
        x = layer.attention(x)[0]
        states.append(x[0].cpu())
    return states


def propagation_rows(
    model,
    input_ids: torch.Tensor,
    weights: list[LayerWeights],
    rtol: float = BASIS_RTOL,
    range_dims: list[int] | None = None,
) -> list[dict]:
    """Energy of attention-only and full-model states outside T_l, layer by layer.

    Goes on while the model has layers, and stops at the first layer whose T_l
    is the whole ``ln_range`` (no LN1 output can lie outside it any more). Also
    reports the energy outside ``rowspace(X0)``, the literal span of the tokens.
    """
    depth = len(weights)
    sites = ["embed.out", *(f"blocks.{l}.out" for l in range(depth))]
    mask = torch.ones(1, len(input_ids), dtype=torch.long)
    captured = run_and_capture(model, input_ids[None], mask, sites)[0]
    x0 = captured["embed.out"].cpu()
    n, d = x0.shape
    attn_states = attention_only_states(model, input_ids, depth)
    x0_span = span(x0, rtol)

    if range_dims is None:
        range_dims = [ln_range(w, rtol).shape[1] for w in weights]
    rows, bound = [], n

    def add(layer, stack, subspace, metric, value):
        rows.append(
            dict(
                layer=layer,
                stack=stack,
                subspace=subspace,
                metric=metric,
                value=float(value),
            )
        )

    # propagate stops early once T_l fills the LN range: zip is not strict.
    pairs = zip(propagate(x0, weights, rtol, range_dims), weights, strict=False)
    for l, (basis, w) in enumerate(pairs):
        layer, full = l + 1, range_dims[l]
        bound = dim_bound(bound, w.n_heads, "affine")
        add(layer, None, "reachable", "dim", basis.shape[1])
        add(layer, None, "reachable", "bound", min(bound, full))
        add(layer, None, "reachable", "ln_range_dim", full)

        # Attention-only and full states against T_l and against rowspace(X0).
        states = {
            "attention_only": attn_states[l],
            "full": captured[f"blocks.{l}.out"].cpu(),
        }
        for stack, z in states.items():
            for sub, q in (("reachable", basis), ("input_span", x0_span)):
                total, worst = energy_outside(z, q)
                add(layer, stack, sub, "energy_outside", total)
                add(layer, stack, sub, "energy_outside_max_token", worst)
    return [dict(n=n, d=d, **row) for row in rows]


# ----------------------------------------------------------------------------
# Verdict C3.


def verdict_c3(
    energy: pd.DataFrame, propagation: pd.DataFrame, regime: pd.DataFrame, cfg: dict
) -> Verdict:
    """C3 from the per-layer energies, the propagation and the regime tables.

    ``energy``: rows of ``layer_energy_table`` with ``model`` and ``d``;
    ``propagation``: rows of ``propagation_rows`` with ``model``; ``regime``:
    one row per model with ``share_in_regime``. ``cfg`` keys: ``inside_max``,
    ``outside_min``, ``containment_subspace``, ``generation_subspace``.

    Only layers where T is a proper subspace count. (a) Containment: every
    attention sub-block output and attention-only state has energy outside T at
    most ``inside_max`` (round-off). (b) Generation: every model's median
    MLP-output energy outside T is at least ``outside_min``, and the full
    model's states leave T_l (median energy outside above ``inside_max``).
    Not supported if (a) or (b) fails. Confirmed if both hold and the literal
    reading holds too: attention-only states stay in the span of the token
    embeddings (median outside at most ``inside_max``), T never fills the LN
    range within the models' depth, and every corpus sequence is short enough.
    Qualified otherwise, naming the conditions.
    """
    inside_max, outside_min = cfg["inside_max"], cfg["outside_min"]

    # Per-layer energies where T(X) is a proper subspace of R^d.
    keys = ["model", "seq", "layer", "subspace"]
    dims = energy[energy.metric == "dim"].set_index(keys)["value"].rename("dim")
    e = energy[energy.metric == "energy_outside"].join(dims, on=keys)
    e = e[e["dim"] < e["d"]]

    # Propagated energies where T_l is a proper part of what LN1 can output.
    wide = propagation[propagation.metric.isin(["dim", "ln_range_dim"])].pivot_table(
        index=["model", "seq", "layer"], columns="metric", values="value"
    )
    pe = propagation[propagation.metric == "energy_outside"].join(
        wide, on=["model", "seq", "layer"]
    )
    proper = pe[pe["dim"] < pe["ln_range_dim"]]
    in_t = proper[proper.subspace == "reachable"]

    # (a) containment.
    attn = e[(e.site == "attn_block") & (e.subspace == cfg["containment_subspace"])]
    attn_max = attn.groupby("model")["value"].max()
    stack_max = in_t[in_t["stack"] == "attention_only"].groupby("model")["value"].max()
    contained = (
        len(attn_max) > 0
        and bool((attn_max <= inside_max).all())
        and bool((stack_max <= inside_max).all())
    )

    # (b) generation by the MLP, and the full model's states leaving T_l.
    mlp = e[(e.site == "mlp") & (e.subspace == cfg["generation_subspace"])]
    mlp_median = mlp.groupby("model")["value"].median()
    full_median = in_t[in_t["stack"] == "full"].groupby("model")["value"].median()
    generated = (
        len(mlp_median) > 0
        and bool((mlp_median >= outside_min).all())
        and bool((full_median > inside_max).all())
    )

    # The literal reading, and how far the regime reaches.
    lit = pe[(pe["stack"] == "attention_only") & (pe.subspace == "input_span")]
    literal_median = lit.groupby("model")["value"].median()
    leaves_span = bool((literal_median > inside_max).any())
    fills = pe[pe["dim"] >= pe["ln_range_dim"]].groupby("model")["layer"].min()
    share = regime.set_index("model")["share_in_regime"]
    limited = len(fills) > 0 or bool((share < 1).any())

    evidence = {
        "attn_block_max_energy_outside": attn_max.to_dict(),
        "attn_block_median_energy_outside": attn.groupby("model")["value"]
        .median()
        .to_dict(),
        "mlp_median_energy_outside": mlp_median.to_dict(),
        "attention_only_stack_max_energy_outside": stack_max.to_dict(),
        "full_stack_median_energy_outside": full_median.to_dict(),
        "attention_only_median_energy_outside_embedding_span": (
            literal_median.to_dict()
        ),
        "layer_where_T_fills_the_LN_range": fills.to_dict(),
        "share_of_corpus_sequences_in_regime": share.to_dict(),
        "inside_max": inside_max,
        "outside_min": outside_min,
    }
    if not (contained and generated):
        failed = []
        if not contained:
            failed.append("attention outputs leave T(X) beyond round-off")
        if not generated:
            failed.append("the MLP output or the full model's states stay in T(X)")
        return Verdict(
            "C3", "not supported", "; ".join(failed) + ".", evidence, experiments=["E4"]
        )

    found = (
        "Attention outputs stay in T(X) to round-off in every model and layer, "
        "and the MLP output leaves it"
    )
    if not (leaves_span or limited):
        return Verdict("C3", "confirmed", found + ".", evidence, experiments=["E4"])
    conditions = []
    if leaves_span:
        conditions.append(
            "attention-only states do leave the span of the token embeddings "
            "(through W_V W_O and LayerNorm), so the claim holds for T(X), not for "
            "that span"
        )
    if len(fills):
        where = ", ".join(f"{v} ({k})" for k, v in fills.items())
        conditions.append(
            f"T fills everything LayerNorm can output at attention layer {where}, "
            "after which attention alone reaches every direction"
        )
    if (share < 1).any():
        where = ", ".join(f"{v:.0%} ({k})" for k, v in share.items())
        conditions.append(
            f"only {where} of the corpus sentences are short enough for a single "
            "layer's T(X) to be smaller than R^d"
        )
    return Verdict(
        "C3",
        "qualified",
        found + "; but " + "; ".join(conditions) + ".",
        evidence,
        experiments=["E4"],
    )
