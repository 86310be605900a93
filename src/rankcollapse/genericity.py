"""Does attention + residual keep the affine rank of the token set for generic weights?

A block maps X (n x d) to ``X + MHA(X)`` (variant attn+res) or ``LN1(X + MHA(X))``
(attn+res+ln), ``MHA(X) = sum_h softmax(X W_Q^h (X W_K^h)^T / sqrt(d_k)) X W_V^h
W_O^h + biases``; Gaussian weight draws estimate how often the affine rank drops,
and a weight set that collapses X exactly, perturbed by ``eps * G``, shows how fast
``sigma_min / sigma_1`` of the centred output leaves zero.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats
from tqdm import tqdm

from rankcollapse import corpus, metrics
from rankcollapse.capture import run_and_capture
from rankcollapse.depth import verdict_c2_depth
from rankcollapse.models import LayerWeights, layer_weights
from rankcollapse.verdict import Verdict

VARIANTS = ("attn+res", "attn+res+ln")
EPS64 = float(np.finfo(np.float64).eps)

# Weights that eps * G perturbs in the exceptional-set experiment: all of them.
PERTURBED = ("W_Q", "W_K", "W_V", "b_Q", "b_K", "b_V", "W_O", "b_O", "gamma1", "beta1")


# ----------------------------------------------------------------------------
# Shapes of a model, read from its config.json.


@dataclass(frozen=True)
class StackShape:
    """The shapes of one model's attention sub-blocks and its initialiser scale."""

    d: int  # model width
    n_heads: int  # H
    d_k: int  # per-head width, d / H
    n_layers: int  # layers of the model
    init_std: float  # initializer_range: std of the model's Gaussian initialiser
    ln_eps: float  # LayerNorm epsilon


def stack_shape(model_dir: str | Path) -> StackShape:
    """Read a fetched model's shapes from ``models/<name>/config.json``."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    d, H = cfg["hidden_size"], cfg["num_attention_heads"]
    return StackShape(
        d=d,
        n_heads=H,
        d_k=d // H,
        n_layers=cfg["num_hidden_layers"],
        init_std=float(cfg.get("initializer_range", 0.02)),
        ln_eps=float(cfg.get("layer_norm_eps", 1e-12)),
    )


# ----------------------------------------------------------------------------
# The attention + residual block, batched. Tokens are rows: x is (*lead, V, n, d),
# where the V axis holds token sets that share one set of weights and ``lead``
# (e.g. a draw axis) indexes weights; weight tensors carry ``lead`` or nothing.


def mha(x: torch.Tensor, w: LayerWeights) -> torch.Tensor:
    """Mixed output ``MHA(X)`` (b_O included) of x (*lead, V, n, d)."""
    *lead, V, n, d = x.shape
    H, dk = w.W_Q.shape[-3], w.W_Q.shape[-1]
    rows = x.reshape(*lead, V * n, d)

    def heads(W, b):  # (*lead, V n, d) @ (*lead, d, H d_k) -> (*lead, V, H, n, d_k)
        flat = W.transpose(-3, -2).reshape(*W.shape[:-3], d, H * dk)
        out = rows @ flat + b.reshape(*b.shape[:-2], 1, H * dk)
        return out.view(*lead, V, n, H, dk).transpose(-3, -2)

    # Queries, keys and values of every head, one matmul each.
    q, k, v = heads(w.W_Q, w.b_Q), heads(w.W_K, w.b_K), heads(w.W_V, w.b_V)

    # Attention pattern and head outputs.
    att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dk), dim=-1)
    z = att @ v  # (*lead, V, H, n, d_k)

    # Mixed output: heads side by side, through W_O, plus b_O.
    z = z.transpose(-3, -2).reshape(*lead, V * n, H * dk)
    W_O = w.W_O.reshape(*w.W_O.shape[:-3], H * dk, d)
    out = z @ W_O + w.b_O.unsqueeze(-2)
    return out.view(*lead, V, n, d)


def layer_norm(x, gamma, beta, eps: float) -> torch.Tensor:
    """BERT's LayerNorm over the last axis (biased variance, eps inside the root)."""
    mu = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, unbiased=False, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * gamma + beta


def advance(x: torch.Tensor, w: LayerWeights, is_ln: torch.Tensor) -> torch.Tensor:
    """One block on x (*lead, V, n, d): ``X + MHA(X)``, then LN1 where ``is_ln[v]``."""
    y = x + mha(x, w)
    if not bool(is_ln.any()):
        return y

    # LN1 parameters (*lead, d) or (d,), aligned with the (V, n) axes of y.
    d = y.shape[-1]
    gamma = w.gamma1.reshape(*w.gamma1.shape[:-1], 1, 1, d)
    beta = w.beta1.reshape(*w.beta1.shape[:-1], 1, 1, d)
    normed = layer_norm(y, gamma, beta, w.eps1)
    return torch.where(is_ln.view(-1, 1, 1).to(y.device), normed, y)


def block(x: torch.Tensor, w: LayerWeights, variant: str) -> torch.Tensor:
    """One attn+res or attn+res+ln block on a single token matrix x (n, d)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r}: expected one of {VARIANTS}")
    return advance(x.unsqueeze(-3), w, variant_mask([variant])).squeeze(-3)


def variant_mask(variants) -> torch.Tensor:
    return torch.tensor([v == "attn+res+ln" for v in variants])


# ----------------------------------------------------------------------------
# Metrics of stacked token matrices, and the long table they go into.


def state_metrics(x: torch.Tensor, rtols: list[float]) -> dict:
    """``metrics.token_metrics`` plus ``affine_rank_f64``, the affine rank at the
    float64 tolerance ``max(n, d) * eps(float64)`` (our states are float64)."""
    n, d = x.shape[-2:]
    rtol64 = max(n, d) * EPS64
    out = metrics.token_metrics(x, [*rtols, rtol64])
    out["affine_rank_f64"] = out.pop(f"affine_rank@{rtol64:g}")
    del out[f"rank@{rtol64:g}"]
    return out


def long_frame(values: dict, axes: dict, **const) -> pd.DataFrame:
    """Long table from tensors of shape ``[len(v) for v in axes.values()]``: one row
    per axis combination and metric, with constant columns ``const`` in front."""
    index = pd.MultiIndex.from_product(list(axes.values()), names=list(axes))
    frames = [
        pd.DataFrame(
            {"metric": name, "value": t.detach().cpu().double().reshape(-1).numpy()},
            index=index,
        )
        for name, t in values.items()
    ]
    df = pd.concat(frames).reset_index()
    for i, (key, value) in enumerate(const.items()):
        df.insert(i, key, value)
    return df


# ----------------------------------------------------------------------------
# Inputs: real embeddings of corpus text, or Gaussian token matrices.


def embedding_inputs(model, tokenizer, lines, corpus_cfg, n_tokens, count):
    """``embed.out`` (X0) of ``count`` sequences of ``n_tokens`` tokens cut from the
    corpus token stream (Dong et al.'s fixed-length setting); (S, n, d) float32."""
    cfg = {**corpus_cfg, "mode": "fixed_length", "fixed_length": n_tokens}
    cfg["max_sequences"] = count
    seqs = corpus.tokenise(lines, tokenizer, cfg, model.config.max_position_embeddings)
    out = []
    for _, ids, mask in corpus.batches(seqs, corpus_cfg["batch_size"]):
        out += [
            s["embed.out"].cpu() for s in run_and_capture(model, ids, mask, "embed.out")
        ]
    return torch.stack(out)


def seed_for(seed: int, *key: int) -> int:
    """An independent 63-bit seed for stream ``key`` of the experiment's ``seed``."""
    state = np.random.SeedSequence(seed, spawn_key=key).generate_state(2, np.uint64)
    return int(state[0] >> np.uint64(1))


def generator(seed: int, *key: int, device="cpu") -> torch.Generator:
    # CPU and CUDA generators give different streams for one seed (a limitation).
    return torch.Generator(device=device).manual_seed(seed_for(seed, *key))


# Stream keys: weights of draw k are stream (0, k), Gaussian inputs stream (1,),
# exceptional-set attention (2,), its perturbation G of draw k (3, k).
WEIGHTS, INPUTS, EXCEPTIONAL, PERTURBATION = 0, 1, 2, 3


def gaussian_inputs(count: int, n: int, d: int, seed: int) -> torch.Tensor:
    """``count`` token matrices with i.i.d. N(0, 1) entries; (count, n, d) float64."""
    g = generator(seed, INPUTS)
    return torch.randn((count, n, d), generator=g, dtype=torch.float64)


def trial_inputs(kinds, embeddings: torch.Tensor, count: int, seed: int) -> dict:
    """The inputs of draws 0..count-1 by kind: ``embeddings`` (reused in turn when
    the corpus gives fewer sequences than draws) and ``gaussian``; (count, n, d)."""
    n, d = embeddings.shape[-2:]
    make = {
        "embeddings": lambda: embeddings[torch.arange(count) % len(embeddings)],
        "gaussian": lambda: gaussian_inputs(count, n, d, seed),
    }
    return {kind: make[kind]().to(torch.float64) for kind in kinds}


# ----------------------------------------------------------------------------
# Random trials: K Gaussian draws of an attention + residual stack.


def draw_layer(gens, shape: StackShape, std: float, dtype, device) -> LayerWeights:
    """One layer of weights per generator, stacked on a draw axis (C, ...).

    W_Q, W_K, W_V, W_O have i.i.d. N(0, std^2) entries, drawn in float32 as a
    float32 model holds them; biases are zero, LN1 has gamma = 1 and beta = 0,
    as BERT's initialiser leaves them.
    """
    H, d, dk = shape.n_heads, shape.d, shape.d_k
    C = len(gens)

    def normal(rows, cols):  # (C, rows, cols), each draw from its own generator
        out = torch.empty((C, rows, cols), device=device)
        for i, g in enumerate(gens):
            torch.randn((rows, cols), generator=g, device=device, out=out[i])
        return out.to(dtype).mul_(std)

    def per_head_in():  # (C, H, d, d_k), a view of (C, d, H d_k) as mha reads it
        return normal(d, H * dk).view(C, d, H, dk).transpose(1, 2)

    def const(value, *size):
        return torch.full(size, float(value), dtype=dtype, device=device)

    return LayerWeights(
        W_Q=per_head_in(),
        W_K=per_head_in(),
        W_V=per_head_in(),
        b_Q=const(0, H, dk),
        b_K=const(0, H, dk),
        b_V=const(0, H, dk),
        W_O=normal(H * dk, d).view(C, H, dk, d),
        b_O=const(0, d),
        gamma1=const(1, d),
        beta1=const(0, d),
        eps1=shape.ln_eps,
        gamma2=const(1, d),
        beta2=const(0, d),
        eps2=shape.ln_eps,
    )


def random_trials(
    inputs: dict,
    shape: StackShape,
    scale: float,
    *,
    draws: int,
    n_layers: int,
    chunk: int,
    seed: int,
    rtols: list[float],
    variants=VARIANTS,
    dtype=torch.float64,
    device="cpu",
) -> pd.DataFrame:
    """Per draw, input and variant: every metric of the states of an ``n_layers``
    stack with weight std ``scale * shape.init_std``.

    ``inputs`` maps an input name to (draws, n, d) token matrices; draw k reads
    matrix k of each. Draw k's weights depend on ``seed`` and k only, so every
    scale multiplies the same standard Gaussian weights, and the result does not
    depend on ``chunk`` (how many draws share one batched tensor).
    """
    names = list(inputs)
    is_ln = variant_mask(variants).repeat(len(names))  # V = inputs x variants
    std = scale * shape.init_std
    frames = []
    for start in tqdm(range(0, draws, chunk), desc=f"draws (scale x{scale:g})"):
        stop = min(start + chunk, draws)
        gens = [generator(seed, WEIGHTS, k, device=device) for k in range(start, stop)]

        # Every input under every variant: (C, V, n, d).
        x = torch.stack(
            [inputs[name][start:stop] for name in names for _ in variants], dim=1
        ).to(device=device, dtype=dtype)

        # The stack, one fresh layer of weights at a time.
        states = [x]
        for _ in range(n_layers):
            x = advance(x, draw_layer(gens, shape, std, dtype, device), is_ln)
            states.append(x)
        states = torch.stack(states, dim=2)  # (C, V, L + 1, n, d)

        # Metrics in float64, one batched SVD per spectrum.
        values = state_metrics(states.to(torch.float64), rtols)
        values = {
            k: v.reshape(stop - start, len(names), len(variants), -1)
            for k, v in values.items()
        }
        axes = {
            "draw": range(start, stop),
            "input": names,
            "variant": list(variants),
            "layer": range(n_layers + 1),
        }
        frames.append(long_frame(values, axes, scale=scale, std=std))
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------
# The model's own weights, attention + residual only, over the corpus.


@torch.no_grad()
def own_weight_trials(model, seqs, batch_size, rtols, variants=VARIANTS):
    """Per sequence and variant: every metric of the states of the model's own
    attention sub-blocks (its W_Q, ..., b_O and LN1), with no MLP, from X0."""
    device = next(model.parameters()).device
    weights = [_to(layer_weights(layer), device) for layer in model.encoder.layer]
    is_ln = variant_mask(variants)
    frames = []
    batches = corpus.batches(seqs, batch_size)
    for seq_ids, ids, mask in tqdm(batches, desc="sequences"):
        captured = run_and_capture(model, ids, mask, "embed.out")
        for seq_id, sites in zip(seq_ids, captured, strict=True):
            x = sites["embed.out"].to(torch.float64).expand(len(variants), -1, -1)
            states = [x]
            for w in weights:
                x = advance(x, w, is_ln)
                states.append(x)
            values = state_metrics(torch.stack(states, dim=1), rtols)
            axes = {"variant": list(variants), "layer": range(len(weights) + 1)}
            frames.append(long_frame(values, axes, seq=seq_id, n=x.shape[-2]))
    return pd.concat(frames, ignore_index=True)


def _to(w: LayerWeights, device) -> LayerWeights:
    return replace(
        w,
        **{
            f.name: getattr(w, f.name).to(device)
            for f in fields(w)
            if isinstance(getattr(w, f.name), torch.Tensor)
        },
    )


# ----------------------------------------------------------------------------
# The exceptional set: weights under which X + MHA(X) = 1 xbar^T exactly.


def exceptional_weights(x: torch.Tensor, shape: StackShape, qk_std: float, gen):
    """One layer that collapses x (n, d) onto its mean: ``X + MHA(X) = 1 xbar^T``.

    Every head uses ``W_Q = W_K`` = one Gaussian matrix (std ``qk_std``), hence one
    pattern A, in which each token attends mostly to itself (the identity pattern
    made finite; cond(A) is reported). If A is invertible and X has full row rank
    n <= H d_k, then
    ``W_V = [-X^+, 0]`` (d x H d_k) and ``W_O = [A^-1 X; 0]`` give
    ``X W_V = [-I_n, 0]``, so ``A X W_V W_O = -X``, and ``b_O = xbar`` adds
    ``1 xbar^T``. Returns the weights and A.
    """
    x = x.to(torch.float64)
    n, d = x.shape
    H, dk = shape.n_heads, shape.d_k
    if n > H * dk:
        raise ValueError(
            f"the construction needs n <= H d_k; got n={n}, H d_k={H * dk}"
        )
    if torch.linalg.matrix_rank(x) < n:
        raise ValueError("the construction needs X of full row rank n")

    # One attention pattern A (n, n), shared by every head: scores are the Gram
    # matrix of the tokens projected by W_Q = W_K, largest on the diagonal.
    W_Q = torch.randn((d, dk), generator=gen, dtype=torch.float64) * qk_std
    W_K = W_Q
    A = torch.softmax((x @ W_Q) @ (x @ W_K).T / math.sqrt(dk), dim=-1)

    # Values and output projection, heads side by side: A X W_V W_O = -X.
    W_V = torch.zeros((d, H * dk), dtype=torch.float64)
    W_V[:, :n] = -torch.linalg.pinv(x)
    W_O = torch.zeros((H * dk, d), dtype=torch.float64)
    W_O[:n] = torch.linalg.solve(A, x)

    zeros, ones = (
        torch.zeros(d, dtype=torch.float64),
        torch.ones(d, dtype=torch.float64),
    )
    w = LayerWeights(
        W_Q=W_Q.expand(H, d, dk).clone(),
        W_K=W_K.expand(H, d, dk).clone(),
        W_V=W_V.view(d, H, dk).transpose(0, 1).contiguous(),  # (H, d, d_k)
        b_Q=torch.zeros((H, dk), dtype=torch.float64),
        b_K=torch.zeros((H, dk), dtype=torch.float64),
        b_V=torch.zeros((H, dk), dtype=torch.float64),
        W_O=W_O.view(H, dk, d).clone(),
        b_O=x.mean(dim=0),
        gamma1=ones,
        beta1=zeros,
        eps1=shape.ln_eps,
        gamma2=ones,
        beta2=zeros,
        eps2=shape.ln_eps,
    )
    return w, A


def perturbation(w: LayerWeights, gens) -> LayerWeights:
    """G: i.i.d. N(0, 1) entries in every perturbed weight, one draw per generator."""

    def normal(t):
        return torch.stack(
            [torch.randn(t.shape, generator=g, dtype=torch.float64) for g in gens]
        )

    return replace(w, **{name: normal(getattr(w, name)) for name in PERTURBED})


def perturbed(w: LayerWeights, G: LayerWeights, eps: float) -> LayerWeights:
    """``w + eps * G`` in every perturbed weight (G carries the draw axis)."""
    return replace(w, **{k: getattr(w, k) + eps * getattr(G, k) for k in PERTURBED})


def eps_grid(exponents, per_decade: int) -> list[float]:
    """Log-spaced eps from ``10**exponents[0]`` to ``10**exponents[1]``."""
    lo, hi = exponents
    return list(np.logspace(lo, hi, round((hi - lo) * per_decade) + 1))


def exceptional_trials(
    x: torch.Tensor,
    shape: StackShape,
    *,
    qk_std: float,
    eps_grid: list[float],
    draws: int,
    seed: int,
    rtols: list[float],
    variants=VARIANTS,
) -> pd.DataFrame:
    """Metrics of the output of the collapsing layer perturbed by ``eps * G``, per
    draw of G, eps (0 included: the construction itself) and variant; with the
    input's affine ranks and cond(A) as metrics ``input_*`` and ``cond_A``."""
    x = x.to(torch.float64)
    w, A = exceptional_weights(x, shape, qk_std, generator(seed, EXCEPTIONAL))
    G = perturbation(w, [generator(seed, PERTURBATION, k) for k in range(draws)])
    is_ln = variant_mask(variants)
    xs = x.expand(draws, len(variants), *x.shape)  # (D, V, n, d)

    # The input's own ranks, for the "dropped" test.
    inp = state_metrics(x, rtols)
    extra = {f"input_{k}": inp[k] for k in inp if k.startswith("affine_rank")}
    extra["input_sigma_min_ratio"] = inp["sigma_min_ratio"]
    extra["cond_A"] = torch.linalg.cond(A)

    frames = []
    for eps in [0.0, *eps_grid]:
        y = advance(xs, perturbed(w, G, eps), is_ln)
        values = state_metrics(y, rtols)
        values.update({k: v.expand(draws, len(variants)) for k, v in extra.items()})
        axes = {"draw": range(draws), "variant": list(variants)}
        frames.append(long_frame(values, axes, n=x.shape[0], d=x.shape[1], eps=eps))
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------
# Summaries: per draw (or sequence), per setting, and the slope against eps.

RANK_COLUMNS = "affine_rank"  # prefix of the rank metrics that decide "dropped"


def _drop_name(metric: str) -> str:
    """affine_rank -> dropped; affine_rank@1e-4 -> dropped@1e-4; ..._f64 -> ..._f64."""
    return "dropped" + metric[len(RANK_COLUMNS) :]


def per_unit(long: pd.DataFrame, keys: list[str], unit: str) -> pd.DataFrame:
    """One row per ``keys + [unit]`` (a draw or a sequence): whether the affine rank
    at any layer >= 1 fell below layer 0's, at each tolerance; the input's
    ``sigma_min / sigma_1`` and the smallest one over layers >= 1 (and where)."""
    wide = long.pivot_table(
        index=[*keys, unit, "layer"], columns="metric", values="value"
    ).reset_index()
    first = wide[wide["layer"] == 0].set_index([*keys, unit])
    rest = wide[wide["layer"] > 0].set_index([*keys, unit])
    by = rest.groupby(level=list(range(len(keys) + 1)))

    out = pd.DataFrame(index=first.index)
    for col in [c for c in wide.columns if str(c).startswith(RANK_COLUMNS)]:
        out[_drop_name(col)] = by[col].min() < first[col]
    out["input_ratio"] = first["sigma_min_ratio"]
    out["min_ratio"] = by["sigma_min_ratio"].min()
    flat = rest.reset_index()
    argmin = flat.loc[flat.groupby([*keys, unit])["sigma_min_ratio"].idxmin()]
    out["min_ratio_layer"] = argmin.set_index([*keys, unit])["layer"].astype(int)
    return out.reset_index()


def layer_summary(long: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """Median and quartiles over units of one metric, per ``keys`` and layer."""
    g = long[long["metric"] == metric].groupby([*keys, "layer"])["value"]
    out = g.median().rename("median").to_frame()
    out["q25"], out["q75"] = g.quantile(0.25), g.quantile(0.75)
    return out.reset_index()


def wilson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials."""
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def drop_table(units: pd.DataFrame, keys: list[str], confidence: float):
    """Per setting: units, how many dropped (each tolerance), the fraction at the
    default tolerance with its Wilson interval, and the ratios' median and minimum."""
    drop_cols = [c for c in units.columns if c.startswith("dropped")]
    rows = []
    for key, g in units.groupby(keys, sort=False):
        k, n = int(g["dropped"].sum()), len(g)
        low, high = wilson(k, n, confidence)
        rows.append(
            {
                **dict(
                    zip(keys, key if isinstance(key, tuple) else (key,), strict=True)
                ),
                "units": n,
                **{c: int(g[c].sum()) for c in drop_cols},
                "fraction": k / n,
                "ci_low": low,
                "ci_high": high,
                "input_ratio_median": g["input_ratio"].median(),
                "min_ratio_median": g["min_ratio"].median(),
                "min_ratio_min": g["min_ratio"].min(),
            }
        )
    return pd.DataFrame(rows)


def exceptional_table(long: pd.DataFrame, fit_range: list[float]) -> pd.DataFrame:
    """Per model, input and variant: the construction's ratio and whether it
    collapsed (float64 tolerance), how many eps > 0 draws stayed collapsed, and
    the least-squares slope of log10(sigma_min / sigma_1) on log10(eps) over
    ``fit_range`` (all draws pooled)."""
    keys = ["model", "input", "variant"]
    wide = long.pivot_table(
        index=[*keys, "n", "d", "eps", "draw"], columns="metric", values="value"
    ).reset_index()
    wide["collapsed"] = wide["affine_rank_f64"] < wide["input_affine_rank_f64"]
    wide["collapsed_f32"] = wide["affine_rank"] < wide["input_affine_rank"]
    rows = []
    for key, g in wide.groupby(keys, sort=False):
        at0, pos = g[g["eps"] == 0], g[g["eps"] > 0]
        lo, hi = fit_range
        fit = pos[(pos["eps"] >= lo) & (pos["eps"] <= hi)]
        reg = stats.linregress(np.log10(fit["eps"]), np.log10(fit["sigma_min_ratio"]))
        still = pos[pos["collapsed_f32"]]
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "rtol_f64": max(g["n"].iloc[0], g["d"].iloc[0]) * EPS64,
                "cond_A": at0["cond_A"].iloc[0],
                "input_ratio": at0["input_sigma_min_ratio"].iloc[0],
                "ratio_at_0": at0["sigma_min_ratio"].max(),
                "collapsed_at_0": bool(at0["collapsed"].all()),
                "affine_rank_f64_at_0": int(at0["affine_rank_f64"].max()),
                "input_affine_rank_f64": int(at0["input_affine_rank_f64"].iloc[0]),
                "eps_draws": len(pos),
                "collapsed_eps_pos": int(pos["collapsed"].sum()),
                "largest_eps_below_default_rtol": still["eps"].max()
                if len(still)
                else 0.0,
                "slope": reg.slope,
                "slope_stderr": reg.stderr,
                "intercept": reg.intercept,
                "fit_points": len(fit),
            }
        )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------
# The verdict on C2, from the E2 tables and, when present, E1's last-layer table.


def verdict_c2(trials, own, exceptional, e1=None, files=()) -> Verdict:
    """Decide C2 from the result tables (``drop_table`` / ``exceptional_table``
    output, E1's ``e1_last_layer.csv`` or None).

    not supported: the affine rank dropped (default tolerance) for some draw at
    the model's own initialiser scale (scale 1) or some corpus sequence under the
    model's own weights; or the exceptional construction did not collapse, or
    stayed collapsed (float64 tolerance) for some eps > 0; or E1's depth rule
    found residual variants collapsed in every model.
    qualified: none of that, but a draw at a larger scale dropped, or E1 found a
    residual variant collapsed in some models: the failing settings are named.
    confirmed: no drop anywhere.
    """

    def name(row, cols):
        return " ".join(
            f"{c}={row[c]:g}" if isinstance(row[c], float) else f"{c}={row[c]}"
            for c in cols
        )

    trial_keys = ["model", "input", "variant", "scale"]
    init = trials[np.isclose(trials["scale"], 1.0)]
    larger = trials[~np.isclose(trials["scale"], 1.0)]
    by_scale = trials.groupby("scale")[["dropped", "units"]].sum()
    evidence = {
        "random draws dropped (default rtol), by scale": {
            f"x{scale:g}": f"{r['dropped']}/{r['units']}"
            for scale, r in by_scale.iterrows()
        },
        "own weights, sequences dropped": {
            f"{r['model']}/{r['variant']}": f"{r['dropped']}/{r['units']}"
            for _, r in own.iterrows()
        },
        "exceptional set collapsed at eps = 0": (
            f"{int(exceptional['collapsed_at_0'].astype(bool).sum())}"
            f"/{len(exceptional)} settings"
        ),
        "exceptional set, eps > 0 draws still collapsed": (
            f"{int(exceptional['collapsed_eps_pos'].sum())}"
            f"/{int(exceptional['eps_draws'].sum())}"
        ),
        "exceptional set, slope of log ratio on log eps": (
            f"{exceptional['slope'].min():.3f} to {exceptional['slope'].max():.3f}"
        ),
    }

    # Failures of the claim itself.
    fails = []
    if len(init) == 0:
        fails.append("no draws at the model's own initialiser scale (scale 1)")
    fails += [
        f"random draws at the initialiser scale, {name(r, trial_keys)}: "
        f"{r['dropped']}/{r['units']} dropped"
        for _, r in init[init["dropped"] > 0].iterrows()
    ]
    fails += [
        f"own weights, {name(r, ['model', 'variant'])}: "
        f"{r['dropped']}/{r['units']} sequences dropped"
        for _, r in own[own["dropped"] > 0].iterrows()
    ]
    bad = exceptional[
        ~exceptional["collapsed_at_0"].astype(bool)
        | (exceptional["collapsed_eps_pos"] > 0)
    ]
    fails += [
        f"exceptional set, {name(r, ['model', 'input', 'variant'])}: "
        f"collapsed at eps=0: {bool(r['collapsed_at_0'])}, "
        f"{r['collapsed_eps_pos']}/{r['eps_draws']} eps>0 draws collapsed"
        for _, r in bad.iterrows()
    ]

    # Conditions outside which it fails.
    conditions = [
        f"random draws, {name(r, trial_keys)}: {r['dropped']}/{r['units']} "
        f"dropped ({r.get('dropped_f64', 'n/a')} at the float64 tolerance; "
        f"min sigma_min/sigma_1 {r['min_ratio_min']:.2g})"
        for _, r in larger[larger["dropped"] > 0].iterrows()
    ]
    # E1's depth evidence, decided by E1's own rule: collapse of a residual variant
    # in every model fails the claim, in some models qualifies it.
    if e1 is None:
        evidence["E1"] = "e1_last_layer.csv not available; E2 evidence only"
    else:
        e1 = e1.assign(collapsed=_as_bool(e1["collapsed"]))
        depth = verdict_c2_depth(e1, pd.DataFrame({"max_abs_diff": []}), [])
        evidence["E1"] = f"{depth.verdict}: {depth.summary}"
        evidence["E1 pure attention collapsed"] = depth.evidence.get(
            "pure_attention_collapsed", {}
        )
        if depth.verdict == "not supported":
            fails.append(f"E1: {depth.summary}")
        elif depth.verdict == "qualified":
            conditions.append(f"E1: {depth.summary}")

    if fails:
        verdict = "not supported"
        summary = "The affine rank is not generically preserved: " + "; ".join(fails)
    elif conditions:
        verdict = "qualified"
        summary = (
            "Attention + residual keeps the affine rank for every draw at the "
            "initialiser scale and for the models' own weights, and the collapsing "
            "weight set is left by every perturbation; it fails in: "
            + "; ".join(conditions)
        )
    else:
        verdict = "confirmed"
        summary = (
            "No draw, scale, input or sequence lost affine rank through attention + "
            "residual (no MLP), and every perturbation of the collapsing weight set "
            "restores the rank."
        )
    evidence["failing"] = fails + conditions
    return Verdict(
        "C2",
        verdict,
        summary,
        evidence,
        list(files),
        ["E1", "E2"] if e1 is not None else ["E2"],
    )


def _as_bool(s: pd.Series) -> pd.Series:
    if s.dtype == bool:
        return s
    return s.astype(str).str.strip().str.lower().isin(["true", "1", "yes"])


# ----------------------------------------------------------------------------
# Figures.


def _panels(models, **share):
    """One row of axes per variant, one column per model."""
    import matplotlib.pyplot as plt

    return plt.subplots(
        len(VARIANTS),
        len(models),
        figsize=(4.2 * len(models), 6.4),
        squeeze=False,
        **share,
    )


def _cells(models):
    """((row, variant), (column, model)) for every panel of ``_panels``."""
    return [(iv, jm) for iv in enumerate(VARIANTS) for jm in enumerate(models)]


def plot_trials(units: pd.DataFrame, labels: dict, rtol_lines: dict):
    """The smallest ``sigma_min / sigma_1`` over layers per draw (random weights, by
    scale) and per sequence (own weights), panels by variant and model; ``labels``
    maps model names to titles, in panel order."""
    import seaborn as sns

    models = [m for m in labels if m in set(units["model"])]
    fig, axes = _panels(models, sharey=True)
    order = list(dict.fromkeys(units["setting"]))
    for (i, variant), (j, model) in _cells(models):
        ax = axes[i, j]
        data = units[(units["variant"] == variant) & (units["model"] == model)]
        sns.stripplot(
            data=data,
            x="setting",
            y="min_ratio",
            hue="input",
            order=order,
            dodge=True,
            size=2.5,
            alpha=0.6,
            ax=ax,
            legend=(i == 0 and j == len(models) - 1),
        )
        ax.set_yscale("log")
        for label, (value, style) in rtol_lines[model].items():
            ax.axhline(value, color="0.3", lw=0.8, ls=style, label=label)
        ax.set_title(f"{labels.get(model, model)}\n{variant}", fontsize=9)
        ax.set_xlabel("weights (scale x init std, or own)")
        ax.set_ylabel(r"min over layers of $\sigma_{\min} / \sigma_1$")
    handles, names = axes[0, -1].get_legend_handles_labels()
    if axes[0, -1].get_legend():
        axes[0, -1].get_legend().remove()
    fig.legend(
        handles, names, loc="lower center", ncol=len(names), fontsize=8, frameon=False
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def plot_exceptional(
    long: pd.DataFrame, table: pd.DataFrame, labels: dict, fit_range: list[float]
):
    """``sigma_min / sigma_1`` of the centred output against eps, log-log; one thin
    line per draw of G, colour by input; dashed: the construction (eps = 0);
    dotted: the float64 tolerance; grey band: the range the slope is fitted over;
    ``labels`` maps model names to titles, in panel order."""
    import seaborn as sns

    ratio = long[long["metric"] == "sigma_min_ratio"]
    models = [m for m in labels if m in set(ratio["model"])]
    inputs = list(dict.fromkeys(ratio["input"]))
    colours = dict(zip(inputs, sns.color_palette("deep", len(inputs)), strict=False))
    fig, axes = _panels(models, sharex=True)
    for (i, variant), (j, model) in _cells(models):
        ax = axes[i, j]
        ax.axvspan(*fit_range, color="0.92", lw=0)
        for inp in inputs:
            sel = ratio[
                (ratio["model"] == model)
                & (ratio["variant"] == variant)
                & (ratio["input"] == inp)
            ]
            row = table[
                (table["model"] == model)
                & (table["variant"] == variant)
                & (table["input"] == inp)
            ].iloc[0]
            for draw, g in sel[sel["eps"] > 0].groupby("draw"):
                ax.plot(
                    g["eps"],
                    g["value"],
                    color=colours[inp],
                    lw=0.8,
                    alpha=0.7,
                    marker=".",
                    ms=3,
                    label=f"{inp}, slope {row['slope']:.3f}" if draw == 0 else None,
                )
            ax.axhline(
                max(row["ratio_at_0"], 1e-300), color=colours[inp], ls="--", lw=0.8
            )
        ax.axhline(row["rtol_f64"], color="0.3", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{labels.get(model, model)}\n{variant}", fontsize=9)
        ax.set_xlabel("eps" if i == len(VARIANTS) - 1 else "")
        ax.set_ylabel(
            r"$\sigma_{\min} / \sigma_1$ of the centred output" if j == 0 else ""
        )
        ax.legend(fontsize=7, frameon=False, loc="upper left")
    fig.text(
        0.5,
        0.01,
        "dashed: the construction (eps = 0); dotted: float64 "
        "tolerance; grey: slope fit range",
        ha="center",
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig
