"""Head-channel non-identifiability (claim C4): heads write z_ih (d_k numbers), the
layer passes on only the mixed output o_i = sum_h z_ih W_O^h + b_O. Reading A counts
the kernel of z -> o R for a d_k-dimensional reader R (n(H-1)d_k when W_O R has rank
d_k), reading B asks whether all of o gives z back, and the head symmetries and the
MLP check show why no attribution of o to heads is canonical.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import torch

from . import corpus
from .capture import run_and_capture
from .metrics import EPS32, default_rtol
from .models import LayerWeights
from .verdict import Verdict

EPS = {"float32": EPS32, "float64": float(np.finfo(np.float64).eps)}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


# ----------------------------------------------------------------------------
# Reading A: a reader that sees the mixed output through a d_k-dimensional channel.


def reader_map(W_O: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """The per-position map M = [W_O^1 R; ...; W_O^H R] from z_i to o_i R.

    ``W_O`` (H, d_k, d), ``R`` (d, d_r) -> M (H d_k, d_r). The row vector z_i
    (H d_k numbers, heads concatenated) is seen as z_i M; the bias b_O R is a
    known constant and drops out of the kernel.
    """
    H, d_k, d = W_O.shape
    return W_O.reshape(H * d_k, d) @ R


def positions_map(M: torch.Tensor, n: int) -> torch.Tensor:
    """The map on all n positions at once, I_n (x) M: (n H d_k, n d_r)."""
    return torch.kron(torch.eye(n, dtype=M.dtype), M)


def kernel_dim(A: torch.Tensor, rtol: float, sigma_1: float | None = None):
    """Dimension of {z : z A = 0} and rank of A, counting singular values above
    ``rtol * sigma_1`` (sigma_1 of A unless given).

    Worked by hand: A = [[1], [1]] (two heads, d_k = 1, W_O = I, R = [1, 1]^T)
    has rank 1, so the kernel has dimension 2 - 1 = 1, spanned by z = (1, -1).
    """
    return kernel_dims(A, [rtol], sigma_1)[0]


def kernel_dims(A: torch.Tensor, rtols, sigma_1: float | None = None, s=None):
    """``kernel_dim`` at several tolerances from one SVD: [(dim, rank), ...];
    ``s``: A's singular values when already known."""
    s = torch.linalg.svdvals(A) if s is None else s
    top = float(s[0]) if sigma_1 is None else sigma_1
    ranks = [int((s > rtol * top).sum()) for rtol in rtols]
    return [(A.shape[0] - r, r) for r in ranks]


def reader_channels(weights: list[LayerWeights], layer: int, kinds, last, gen):
    """Yield (reader, reader_head, R) for every channel that reads layer's output.

    Below the last layer, R is each next-layer head's W_V (or W_Q, W_K: ``kinds``),
    (d, d_k). The last layer has no next layer: ``last`` = "random" draws one
    Gaussian (d, d_k) reader from ``gen``; "none" yields nothing.
    """
    if layer + 1 < len(weights):
        nxt = weights[layer + 1]
        for kind in kinds:
            mats = getattr(nxt, kind)  # (H, d, d_k)
            for h in range(mats.shape[0]):
                yield kind, h, mats[h]
    elif last == "random":
        w = weights[layer]
        d, d_k = w.W_O.shape[2], w.d_k
        yield "random", 0, torch.randn(d, d_k, generator=gen, dtype=torch.float64)


def reading_a(weights, model, cfg, rtols) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Kernel dimension of z -> o R on n positions, every layer and reader.

    Returns the tidy kernel table (``method`` block: n * dim ker M; full: SVD of
    I_n (x) M, done for n <= ``full_check_max_n``) and the spectra of every M.
    ``rtol`` None is the project default max(H d_k, d_k) * eps(float32), used for
    the block and the full matrix alike (sigma_1 is the same for both).
    """
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    rows, spectra = [], []
    for layer, w in enumerate(weights):
        H, d_k = w.n_heads, w.d_k
        for reader, rh, R in reader_channels(
            weights, layer, cfg["readers"], cfg["last_layer_reader"], gen
        ):
            # One reader: the per-position map and its spectrum.
            M = reader_map(w.W_O, R)  # (H d_k, d_k)
            s = torch.linalg.svdvals(M)
            base = dict(model=model, layer=layer, reader=reader, reader_head=rh)
            spectra += [
                {**base, "operator": "M", "index": i, "value": float(v / s[0])}
                for i, v in enumerate(s)
            ]
            rtol0 = cfg["rtol"] or default_rtol(*M.shape)

            # Kernel dimension on n positions, from the block structure and,
            # for small n, from the full matrix.
            tols = [rtol0, *rtols]
            block = kernel_dims(M, tols, s=s)
            for n in cfg["n_values"]:
                full = (
                    kernel_dims(positions_map(M, n), tols, float(s[0]))
                    if n <= cfg["full_check_max_n"]
                    else [None] * len(tols)
                )
                for rtol, (dim, _), f in zip(tols, block, full, strict=True):
                    keys = {
                        **base,
                        "n": n,
                        "rtol": rtol,
                        "decision": rtol == rtol0,
                        "H": H,
                        "d_k": d_k,
                        "method": "block",
                    }
                    rows.append({**keys, "metric": "kernel_dim", "value": n * dim})
                    rows.append(
                        {**keys, "metric": "formula", "value": n * (H - 1) * d_k}
                    )
                    if f is not None:
                        rows.append(
                            {
                                **keys,
                                "method": "full",
                                "metric": "kernel_dim",
                                "value": f[0],
                            }
                        )
    return pd.DataFrame(rows), pd.DataFrame(spectra)


# ----------------------------------------------------------------------------
# Reading B: a reader that sees all of o (and, after the residual, x + o).


def reading_b(weights, model, cfg, rtols) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per layer: cond(W_O), its smallest singular values, and kernel dimensions
    per position of z -> o (H d_k - rank W_O) and of (x, z) -> x + o (x unknown).
    """
    rows, spectra = [], []
    for layer, w in enumerate(weights):
        H, d_k, d = w.W_O.shape
        W = w.W_O.reshape(H * d_k, d)  # (H d_k, d)
        s = torch.linalg.svdvals(W)
        base = dict(model=model, layer=layer, H=H, d_k=d_k, d=d)
        spectra += [
            {
                "model": model,
                "layer": layer,
                "operator": "W_O",
                "index": i,
                "value": float(v / s[0]),
            }
            for i, v in enumerate(s)
        ]
        rows += [
            {**base, "rtol": np.nan, "metric": "cond", "value": float(s[0] / s[-1])},
            {**base, "rtol": np.nan, "metric": "sigma_1", "value": float(s[0])},
            {
                **base,
                "rtol": np.nan,
                "metric": "sigma_min_ratio",
                "value": float(s[-1] / s[0]),
            },
        ]
        rows += [
            {
                **base,
                "rtol": np.nan,
                "metric": f"sigma_min{k}_ratio",
                "value": float(s[-k] / s[0]),
            }
            for k in range(2, min(cfg["smallest_k"], len(s)) + 1)
        ]

        # The residual: the reader gets x + z W_O with x unknown, the map
        # [I_d; W_O] from (x, z) of size (d + H d_k, d).
        stacked = torch.cat([torch.eye(d, dtype=W.dtype), W])
        rtol0 = cfg["rtol"] or default_rtol(*W.shape)
        tols = [rtol0, *rtols]
        for rtol, (dim_o, rank), (dim_res, _) in zip(
            tols, kernel_dims(W, tols, s=s), kernel_dims(stacked, tols), strict=True
        ):
            keys = {**base, "rtol": rtol, "decision": rtol == rtol0}
            rows += [
                {**keys, "metric": "rank_W_O", "value": rank},
                {**keys, "metric": "kernel_o", "value": dim_o},
                {**keys, "metric": "kernel_residual", "value": dim_res},
            ]
    return pd.DataFrame(rows), pd.DataFrame(spectra)


SITES = ("in", "attn.z", "attn.out", "ln1.in")


def captured_sequences(model_obj, tokenizer, corpus_cfg: dict, count: int):
    """The sites ``blocks.*.{in, attn.z, attn.out, ln1.in}`` of the first ``count``
    corpus sequences, one dict per sequence, padding removed, on the CPU."""
    lines = corpus.read_lines(corpus_cfg.get("path"))
    seqs = corpus.tokenise(
        lines, tokenizer, corpus_cfg, model_obj.config.max_position_embeddings
    )[:count]
    pad_id = tokenizer.pad_token_id or 0
    out = []
    for _, ids, mask in corpus.batches(seqs, corpus_cfg["batch_size"], pad_id):
        caps = run_and_capture(model_obj, ids, mask, [f"blocks.*.{s}" for s in SITES])
        out += [{k: v.cpu() for k, v in c.items()} for c in caps]
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b||_F / ||b||_F."""
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def recovery(weights, seqs: list[dict], model, cfg) -> pd.DataFrame:
    """What each reader gets back of the captured head outputs, per layer.

    ``seqs``: captured sites per sequence (``blocks.{l}.in``, ``.attn.z``,
    ``.attn.out``, ``.ln1.in``). Reading B solves z W_O = o - b_O from the mixed
    output, from x + o with x known, and from x + o with x taken as 0. Reading A
    projects z onto the part each next-layer W_V reader sees (min-norm recovery).
    """
    rows = []
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    for layer, w in enumerate(weights):
        H, d_k, d = w.W_O.shape
        W = w.W_O.reshape(H * d_k, d)

        # Captured tokens of every sequence, pooled, in float64.
        def site(name, layer=layer):
            return torch.cat([s[f"blocks.{layer}.{name}"] for s in seqs]).double()

        z = site("attn.z").reshape(-1, H * d_k)  # (N, H d_k)
        x, o, res = site("in"), site("attn.out"), site("ln1.in")  # (N, d)
        W_pinv = torch.linalg.pinv(W)  # (d, H d_k), least-squares z from z W
        base = dict(model=model, layer=layer)

        def row(reader, metric, value, base=base):
            rows.append({**base, "reader": reader, "metric": metric, "value": value})

        # The captured sites obey o = sum_h z_h W_O^h + b_O.
        row("o", "decomposition_err", _rel(z @ W + w.b_O, o))
        row("o", "mixed_share", float(o.norm() / x.norm()))

        # Reading B: solve for the heads from o, from x + o knowing x, and from
        # x + o without x.
        for reader, target in [
            ("o", o - w.b_O),
            ("x+o, x known", res - x - w.b_O),
            ("x+o, x unknown", res - w.b_O),
        ]:
            z_hat = target @ W_pinv
            per_head = [
                _rel(z_hat.view(-1, H, d_k)[:, h], z.view(-1, H, d_k)[:, h])
                for h in range(H)
            ]
            row(reader, "recovery_err", _rel(z_hat, z))
            row(reader, "recovery_err_worst_head", max(per_head))

        # Reading A: the part of z a d_k-dimensional reader sees is its projection
        # on the column space of M; the rest is the kernel.
        for reader, rh, R in reader_channels(
            weights, layer, ["W_V"], cfg["last_layer_reader"], gen
        ):
            M = reader_map(w.W_O, R)
            U, s, _ = torch.linalg.svd(M, full_matrices=False)
            r = int((s > (cfg["rtol"] or default_rtol(*M.shape)) * s[0]).sum())
            z_hat = z @ U[:, :r] @ U[:, :r].T  # min-norm recovery from z M
            per_head = [
                _rel(z_hat.view(-1, H, d_k)[:, h], z.view(-1, H, d_k)[:, h])
                for h in range(H)
            ]
            rows.append(
                {
                    **base,
                    "reader": reader,
                    "reader_head": rh,
                    "metric": "unseen_energy",
                    "value": 1.0 - float((z_hat.norm() / z.norm()) ** 2),
                }
            )
            rows.append(
                {
                    **base,
                    "reader": reader,
                    "reader_head": rh,
                    "metric": "recovery_err_worst_head",
                    "value": max(per_head),
                }
            )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------
# The symmetries, applied to a copy of transformers' own BertLayer.


def derangement(H: int, gen: torch.Generator) -> torch.Tensor:
    """A random permutation of the H heads with no head left in place (H >= 2)."""
    while True:
        perm = torch.randperm(H, generator=gen)
        if H < 2 or bool((perm != torch.arange(H)).all()):
            return perm


def random_gauge(d_k: int, cond: float, gen: torch.Generator) -> torch.Tensor:
    """G = U diag(s) V^T, U and V Haar orthogonal, s log-spaced from cond^(1/2)
    to cond^(-1/2): det |G| = 1 and cond(G) = ``cond`` exactly; float64.
    """

    def haar():
        q, r = torch.linalg.qr(
            torch.randn(d_k, d_k, generator=gen, dtype=torch.float64)
        )
        return q * torch.sign(torch.diagonal(r))

    half = 0.5 * math.log10(cond)
    s = torch.logspace(half, -half, d_k, dtype=torch.float64)
    return haar() @ torch.diag(s) @ haar().T


def _blocks(t: torch.Tensor, H: int) -> list[torch.Tensor]:
    return list(t.double().chunk(H, dim=0))


@torch.no_grad()
def permuted_layer(layer, perm: torch.Tensor):
    """A copy of ``layer`` whose head h is the original head perm[h]: rows of
    W_Q, W_K, W_V (and biases) and columns of W_O moved consistently."""
    new = copy.deepcopy(layer)
    att, dense = new.attention.self, new.attention.output.dense
    d_k = att.attention_head_size
    idx = (perm[:, None] * d_k + torch.arange(d_k)).reshape(-1)
    for lin in (att.query, att.key, att.value):
        lin.weight.copy_(lin.weight[idx])
        lin.bias.copy_(lin.bias[idx])
    dense.weight.copy_(dense.weight[:, idx])
    return new


@torch.no_grad()
def gauged_layer(layer, gauges: torch.Tensor):
    """A copy of ``layer`` with W_V^h -> W_V^h G_h, b_V^h -> b_V^h G_h and
    W_O^h -> G_h^-1 W_O^h; ``gauges`` (H, d_k, d_k) float64.

    In torch's layout the value weight block is (W_V^h)^T, so it becomes
    G_h^T (W_V^h)^T; the output weight block is (W_O^h)^T, so it becomes
    (W_O^h)^T G_h^-T. New weights are formed in float64, then cast.
    """
    new = copy.deepcopy(layer)
    value, dense = new.attention.self.value, new.attention.output.dense
    H = gauges.shape[0]
    w_v = [g.T @ b for g, b in zip(gauges, _blocks(value.weight, H), strict=True)]
    b_v = [b @ g for g, b in zip(gauges, _blocks(value.bias, H), strict=True)]
    w_o = [
        b.T @ torch.linalg.inv(g).T
        for g, b in zip(gauges, _blocks(dense.weight.T, H), strict=True)
    ]
    value.weight.copy_(torch.cat(w_v))
    value.bias.copy_(torch.cat(b_v))
    dense.weight.copy_(torch.cat(w_o, dim=1))
    return new


@torch.no_grad()
def layer_pass(layer, x: torch.Tensor, mask: torch.Tensor):
    """Run transformers' BertLayer forward on x (B, n, d) with padding mask (B, n).

    Returns the layer output (B, n, d), the head outputs z (B, n, H, d_k) and the
    mixed output o (B, n, d), read where ``rankcollapse.capture`` reads the sites
    ``blocks.{l}.attn.z`` and ``blocks.{l}.attn.out``.
    """
    from transformers.masking_utils import create_bidirectional_mask

    H = layer.attention.self.num_attention_heads
    dense = layer.attention.output.dense
    store = {}
    hooks = [
        dense.register_forward_pre_hook(lambda m, a: store.update(z=a[0])),
        dense.register_forward_hook(lambda m, a, out: store.update(o=out)),
    ]
    try:
        att_mask = create_bidirectional_mask(
            config=layer.attention.self.config, inputs_embeds=x, attention_mask=mask
        )
        out = layer(x, att_mask)
    finally:
        for h in hooks:
            h.remove()
    out = out[0] if isinstance(out, tuple) else out
    return out, store["z"].view(*x.shape[:2], H, -1), store["o"]


def _masked_rel(a, b, mask) -> float:
    """Relative Frobenius difference over the rows that are not padding."""
    keep = mask.bool()
    return _rel(a[keep].double(), b[keep].double())


def _head_moved(z_new, z, mask) -> torch.Tensor:
    """Per head ||z'_h - z_h||_F / ||z_h||_F over tokens; z (B, n, H, d_k)."""
    keep = mask.bool()
    a, b = z_new[keep].double(), z[keep].double()  # (N, H, d_k)
    return (a - b).norm(dim=(0, 2)) / b.norm(dim=(0, 2)).clamp_min(1e-300)


def draw_transforms(H: int, d_k: int, cfg: dict, gen: torch.Generator) -> dict:
    """The random transforms one layer is checked with: a head derangement, one
    gauge per condition number in ``gauge_cond`` ((H, d_k, d_k) each), and a
    Haar orthogonal (H d_k, H d_k) matrix that mixes signal across heads."""
    q, r = torch.linalg.qr(
        torch.randn(H * d_k, H * d_k, generator=gen, dtype=torch.float64)
    )
    return {
        "perm": derangement(H, gen),
        "gauges": {
            float(c): torch.stack([random_gauge(d_k, c, gen) for _ in range(H)])
            for c in cfg["gauge_cond"]
        },
        "mixing": q * torch.sign(torch.diagonal(r)),
    }


@torch.no_grad()
def symmetry_checks(layer, x, mask, ref, tf: dict) -> list[dict]:
    """Invariance of one layer under the head permutation and per-head gauges.

    ``layer`` and ``x`` share one dtype; ``ref`` = ``layer_pass(layer, x, mask)``.
    Each transformed copy runs on the same x; rows give the relative change of
    the layer output and of the mixed output, how much each z_h moved, and how
    far z' is from the predicted z_perm(h) or z_h G_h.
    """
    out, z, o = ref
    transforms = [
        ("permutation", 1.0, permuted_layer(layer, tf["perm"]), z[:, :, tf["perm"]])
    ]
    transforms += [
        (
            "gauge",
            c,
            gauged_layer(layer, g),
            torch.einsum("bnhk,hkj->bnhj", z.double(), g),
        )
        for c, g in tf["gauges"].items()
    ]
    rows = []
    for name, cond, new, predicted in transforms:
        out2, z2, o2 = layer_pass(new, x, mask)
        moved = _head_moved(z2, z, mask)
        keys = dict(transform=name, cond=cond)
        rows += [
            {**keys, "metric": "out_rel_err", "value": _masked_rel(out2, out, mask)},
            {**keys, "metric": "o_rel_err", "value": _masked_rel(o2, o, mask)},
            {**keys, "metric": "z_moved_median", "value": float(moved.median())},
            {**keys, "metric": "z_moved_min", "value": float(moved.min())},
            {**keys, "metric": "z_moved_max", "value": float(moved.max())},
            {
                **keys,
                "metric": "z_predicted_err",
                "value": _masked_rel(z2, predicted, mask),
            },
        ]
    return rows


# ----------------------------------------------------------------------------
# The MLP reads LN1(x + o): it cannot tell two head decompositions of one o apart.


@torch.no_grad()
def mlp_read(layer, x: torch.Tensor, o: torch.Tensor):
    """The MLP output and the layer output that follow mixed output o, through
    the layer's own modules: a = LN1(x + o), MLP(a), LN2(a + MLP(a))."""
    a = layer.attention.output.LayerNorm(x + o)
    mlp = layer.output.dense(layer.intermediate(a))
    return mlp, layer.feed_forward_chunk(a)


@torch.no_grad()
def mlp_checks(layer, x, mask, ref, tf: dict) -> list[dict]:
    """Decompositions (z', W_O') of the same mixed output, fed to the MLP.

    permutation: (z_perm(h), W_O^perm(h)); gauge: (z_h G_h, G_h^-1 W_O^h);
    mixing: (z T, T^T W_O), T orthogonal (H d_k, H d_k), which moves signal
    across heads and is no symmetry of the weights; control: head 0 gauged by the
    best-conditioned G_0 with W_O kept, so that o changes.
    """
    _, z, o = ref
    dense = layer.attention.output.dense
    H, d_k = z.shape[-2:]
    W_O = dense.weight.T.double().reshape(H, d_k, -1)  # (H, d_k, d)
    mlp, out = mlp_read(layer, x, o)

    # Each decomposition as (z', W_O'), built in float64.
    zd = z.double()
    perm, gauges, T = tf["perm"], tf["gauges"], tf["mixing"]
    decomps = [("permutation", 1.0, zd[:, :, perm], W_O[perm])]
    decomps += [
        ("gauge", c, torch.einsum("bnhk,hkj->bnhj", zd, g), torch.linalg.inv(g) @ W_O)
        for c, g in gauges.items()
    ]
    decomps.append(
        (
            "mixing",
            1.0,
            (zd.flatten(2) @ T).view_as(zd),
            (T.T @ W_O.flatten(0, 1)).view_as(W_O),
        )
    )
    control = zd.clone()
    control[:, :, 0] = zd[:, :, 0] @ gauges[min(gauges)][0]
    decomps.append(("control", min(gauges), control, W_O))

    # Recombine in the layer's dtype and read through the MLP.
    rows = []
    for name, cond, z2, W2 in decomps:
        o2 = torch.einsum("bnhk,hkd->bnd", z2.to(x.dtype), W2.to(x.dtype)) + dense.bias
        mlp2, out2 = mlp_read(layer, x, o2)
        moved = _head_moved(z2, zd, mask)
        keys = dict(decomposition=name, cond=cond)
        rows += [
            {**keys, "metric": "z_moved_median", "value": float(moved.median())},
            {**keys, "metric": "z_moved_max", "value": float(moved.max())},
            {**keys, "metric": "o_rel_diff", "value": _masked_rel(o2, o, mask)},
            {**keys, "metric": "mlp_rel_diff", "value": _masked_rel(mlp2, mlp, mask)},
            {**keys, "metric": "out_rel_diff", "value": _masked_rel(out2, out, mask)},
        ]
    return rows


def pad(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (n_b, d) tensors into (B, n_max, d) with a (B, n_max) padding mask."""
    x = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
    mask = torch.zeros(x.shape[:2], dtype=torch.long)
    for b, s in enumerate(seqs):
        mask[b, : s.shape[0]] = 1
    return x, mask


def symmetries(model_obj, seqs: list[dict], model: str, cfg, progress=iter):
    """Symmetry and MLP rows for every layer and dtype, on the captured inputs
    ``blocks.{l}.in`` of ``seqs``; each layer runs as a copy in each dtype."""
    sym, mlp = [], []
    layers = model_obj.encoder.layer
    for layer in progress(range(len(layers))):
        gen = torch.Generator().manual_seed(int(cfg["seed"]) * 1009 + layer)
        att = layers[layer].attention.self
        tf = draw_transforms(att.num_attention_heads, att.attention_head_size, cfg, gen)
        x, mask = pad([s[f"blocks.{layer}.in"] for s in seqs])  # (B, n, d)
        for dtype in cfg["dtypes"]:
            own = copy.deepcopy(layers[layer]).to(x.device, DTYPES[dtype])
            xd = x.to(DTYPES[dtype])
            ref = layer_pass(own, xd, mask)
            keys = dict(model=model, layer=layer, dtype=dtype)
            sym += [{**keys, **r} for r in symmetry_checks(own, xd, mask, ref, tf)]
            mlp += [{**keys, **r} for r in mlp_checks(own, xd, mask, ref, tf)]
    return pd.DataFrame(sym), pd.DataFrame(mlp)


# ----------------------------------------------------------------------------
# Tables for the book and the verdict.


def kernel_table(kernel: pd.DataFrame) -> pd.DataFrame:
    """One row per model, layer, reader, n and rtol: formula, kernel dimension from
    the block structure (min and max over reader heads), from the full matrix."""
    keys = ["model", "layer", "reader", "n", "rtol", "decision", "H", "d_k"]
    wide = kernel.pivot_table(
        index=keys + ["reader_head"],
        columns=["method", "metric"],
        values="value",
        aggfunc="first",
    )
    wide.columns = ["_".join(c) for c in wide.columns]
    wide = wide.reset_index()
    g = wide.groupby(keys, dropna=False)
    out = g.agg(
        formula=("block_formula", "first"),
        kernel_dim_min=("block_kernel_dim", "min"),
        kernel_dim_max=("block_kernel_dim", "max"),
        readers=("block_kernel_dim", "size"),
    )
    if "full_kernel_dim" in wide:
        checked = wide["full_kernel_dim"].notna()
        agree = (wide["full_kernel_dim"] == wide["block_kernel_dim"]) & checked
        by = [wide[k] for k in keys]
        out["full_checked"] = checked.astype(int).groupby(by, dropna=False).sum()
        out["full_agrees"] = agree.astype(int).groupby(by, dropna=False).sum()
    out = out.reset_index()
    for col in ["formula", "kernel_dim_min", "kernel_dim_max"]:
        out[col] = out[col].astype(int)
    return out


READOUT_COLUMNS = {
    "decomposition_err | o": "decomposition_err",
    "mixed_share | o": "mixed_share",
    "recovery_err | o": "recovery_err_from_o",
    "recovery_err | x+o, x known": "recovery_err_x_known",
    "recovery_err | x+o, x unknown": "recovery_err_x_unknown",
    "recovery_err_worst_head | o": "worst_head_err_from_o",
    "recovery_err_worst_head | x+o, x known": "worst_head_err_x_known",
    "recovery_err_worst_head | x+o, x unknown": "worst_head_err_x_unknown",
}


def reading_b_table(wo: pd.DataFrame, rec: pd.DataFrame) -> pd.DataFrame:
    """One row per model and layer: W_O's conditioning and kernels at the decision
    tolerance, and what the readers got back of the captured head outputs."""
    fixed = wo[wo["rtol"].isna()].pivot_table(
        index=["model", "layer", "H", "d_k", "d"], columns="metric", values="value"
    )
    at = wo[wo["decision"].eq(True)]
    ranks = at.pivot_table(
        index=["model", "layer", "rtol"], columns="metric", values="value"
    )
    real = rec[rec["reader"].isin(["o", "x+o, x known", "x+o, x unknown"])]
    real = real.assign(col=real["metric"] + " | " + real["reader"]).pivot_table(
        index=["model", "layer"], columns="col", values="value"
    )
    real = real.rename(columns=READOUT_COLUMNS)
    a = rec[rec["metric"].eq("unseen_energy")].groupby(["model", "layer"])["value"]
    out = fixed.reset_index().merge(ranks.reset_index(), on=["model", "layer"])
    out = out.merge(real.reset_index(), on=["model", "layer"])
    out["A_unseen_energy"] = (
        a.median().reindex(pd.MultiIndex.from_frame(out[["model", "layer"]])).to_numpy()
    )
    return out


def symmetry_table(sym: pd.DataFrame, mlp: pd.DataFrame) -> tuple:
    """Worst case over layers of every check: per model, transform, cond, dtype."""
    agg = {
        "out_rel_err": "max",
        "o_rel_err": "max",
        "z_moved_median": "median",
        "z_moved_min": "min",
        "z_moved_max": "max",
        "z_predicted_err": "max",
        "o_rel_diff": "max",
        "mlp_rel_diff": "max",
        "out_rel_diff": "max",
    }

    def worst(df, key):
        w = df.pivot_table(
            index=["model", key, "cond", "dtype", "layer"],
            columns="metric",
            values="value",
        ).reset_index()
        cols = {c: agg[c] for c in w.columns if c in agg}
        return w.groupby(["model", key, "cond", "dtype"]).agg(cols).reset_index()

    return worst(sym, "transform"), worst(mlp, "decomposition")


def roundoff_bound(cond, dtype, factor: float):
    """What an exact symmetry may show in floating point: factor * cond * eps."""
    eps = np.asarray([EPS[t] for t in np.atleast_1d(dtype)])
    return factor * np.asarray(cond, dtype=float) * eps


def verdict_c4(
    kernel: pd.DataFrame,
    readout: pd.DataFrame,
    sym: pd.DataFrame,
    mlp: pd.DataFrame,
    cfg: dict,
) -> Verdict:
    """C4 from the E5 tables (``kernel_table``, ``reading_b_table``,
    ``symmetry_table``), with thresholds from the config chosen before any run.

    - count: at the decision tolerance, every reading-A kernel equals n(H-1)d_k
      (``exact``) or is at least that (``at_least``), and every full-matrix SVD
      agrees with the block count;
    - symmetries and MLP (rows of ``verdict_dtype``): every invariance error below
      ``roundoff_factor * cond * eps``, every z moved by at least ``moved_tol``,
      the control's MLP output moved by at least ``moved_tol``;
    - reading B: heads come back from o when every layer's recovery error from
      the captured mixed output is below ``recover_tol``.

    confirmed: all hold and no layer gives its heads back under reading B;
    qualified: all hold but reading B recovers heads, or a kernel exceeds the
    formula; not supported: a kernel below the formula, a full check that
    disagrees, a broken symmetry or an MLP that tells decompositions apart.
    """
    k = kernel[kernel["decision"]]
    exact = bool(
        ((k.kernel_dim_min == k.formula) & (k.kernel_dim_max == k.formula)).all()
    )
    at_least = bool((k.kernel_dim_min >= k.formula).all())
    full_ok = True
    if "full_checked" in k:
        full_ok = bool((k["full_checked"] == k["full_agrees"]).all())

    # Symmetries and the MLP, judged against the round-off bound.
    dt, factor, moved = cfg["verdict_dtype"], cfg["roundoff_factor"], cfg["moved_tol"]
    s = sym[sym["dtype"] == dt]
    s_bound = roundoff_bound(s["cond"], s["dtype"], factor)
    sym_ok = bool(
        (s["out_rel_err"] <= s_bound).all() and (s["z_moved_min"] >= moved).all()
    )
    m = mlp[mlp["dtype"] == dt]
    same = m[m["decomposition"] != "control"]
    control = m[m["decomposition"] == "control"]
    m_bound = roundoff_bound(same["cond"], same["dtype"], factor)
    mlp_ok = bool(
        (same["mlp_rel_diff"] <= m_bound).all()
        and (same["z_moved_median"] >= moved).all()
        and len(control) > 0
        and (control["mlp_rel_diff"] >= moved).all()
    )

    # Reading B on the captured head outputs.
    rec = readout["recovery_err_from_o"]
    b_layers = readout[rec <= cfg["recover_tol"]]
    b_recovers = len(b_layers) > 0

    evidence = {
        "reading A kernel = n(H-1)d_k everywhere": exact,
        "reading A kernel >= n(H-1)d_k everywhere": at_least,
        "full-matrix SVD agrees with the block count": full_ok,
        "reading A cases (model, layer, reader, n)": len(k),
        "n tried": sorted(int(v) for v in k["n"].unique()),
        "symmetries invariant up to round-off": sym_ok,
        f"worst {dt} output error / bound (symmetries)": float(
            (s["out_rel_err"] / s_bound).max()
        )
        if len(s)
        else float("nan"),
        "MLP blind to the decomposition": mlp_ok,
        f"worst {dt} MLP difference / bound": float(
            (same["mlp_rel_diff"] / m_bound).max()
        )
        if len(same)
        else float("nan"),
        "control MLP change (min)": float(control["mlp_rel_diff"].min())
        if len(control)
        else float("nan"),
        "reading B: layers whose heads come back from o": f"{len(b_layers)} of "
        f"{len(readout)}",
        "reading B: worst recovery error from o": float(rec.max()),
        "reading B: largest cond(W_O)": float(readout["cond"].max()),
        "reading B: layers with a numerical kernel of W_O": int(
            (readout["kernel_o"] > 0).sum()
        )
        if "kernel_o" in readout
        else 0,
        "x + o, x unknown: smallest recovery error": float(
            readout["recovery_err_x_unknown"].min()
        ),
    }
    files = [
        "results/tables/e5_kernel.csv",
        "results/tables/e5_reading_b.csv",
        "results/tables/e5_symmetry.csv",
        "results/tables/e5_mlp.csv",
    ]

    if not (at_least and full_ok and sym_ok and mlp_ok):
        failed = [
            name
            for name, ok in [
                ("kernel count", at_least and full_ok),
                ("symmetries", sym_ok),
                ("MLP", mlp_ok),
            ]
            if not ok
        ]
        return Verdict(
            "C4",
            "not supported",
            "The E5 checks fail for: " + ", ".join(failed) + ".",
            evidence,
            files,
            ["E5"],
        )
    if exact and not b_recovers:
        return Verdict(
            "C4",
            "confirmed",
            "Every d_k-dimensional reader leaves exactly n(H-1)d_k directions of the "
            "head outputs unseen, no layer's W_O gives the heads back, the head "
            "permutation and per-head gauge leave the output unchanged while moving "
            "z_h, and the MLP cannot tell decompositions of one mixed output apart.",
            evidence,
            files,
            ["E5"],
        )
    conditions = []
    if b_recovers:
        conditions.append(
            f"a reader of the whole mixed output o solves back every head in "
            f"{len(b_layers)} of {len(readout)} layers (largest cond(W_O) "
            f"{float(readout['cond'].max()):.2g}, worst relative error "
            f"{float(rec.max()):.2g}), so the count holds for a d_k-dimensional "
            "reader (reading A), not for the summation itself"
        )
    if not exact:
        conditions.append("some readers leave more than n(H-1)d_k directions unseen")
    return Verdict(
        "C4",
        "qualified",
        "The head permutation and the per-head gauge leave the forward pass "
        "unchanged while moving z_h, the MLP cannot tell decompositions of one "
        "mixed output apart, and reading A gives the count; but "
        + "; and ".join(conditions)
        + ".",
        evidence,
        files,
        ["E5"],
    )


# ----------------------------------------------------------------------------
# Figures.


def plot_kernel(table: pd.DataFrame, spectra: pd.DataFrame, png_path: str) -> None:
    """Measured kernel dimension against n(H-1)d_k, and the gap of every M."""
    from .plotting import plt, save, sns

    t = table[table["decision"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))

    # (a) every (model, layer, reader, n) on the diagonal if the count holds.
    ax = axes[0]
    sns.scatterplot(
        data=t,
        x="formula",
        y="kernel_dim_max",
        hue="model",
        style="reader",
        ax=ax,
        s=40,
    )
    lim = [max(t["formula"].min(), 1) * 0.7, t["formula"].max() * 1.4]
    ax.plot(lim, lim, color="grey", lw=1, ls="--", label="n(H-1)d_k")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="n(H-1)d_k",
        ylabel="measured kernel dimension (SVD)",
        title="Reading A: kernel of z -> o R",
    )
    ax.legend(fontsize=7)

    # (b) the smallest singular value of each M, relative, per layer.
    ax = axes[1]
    s = spectra[spectra["operator"] == "M"]
    smin = s.groupby(["model", "layer", "reader", "reader_head"])["value"].min()
    sns.stripplot(
        data=smin.reset_index(),
        x="layer",
        y="value",
        hue="model",
        ax=ax,
        size=3,
        dodge=True,
    )
    rtol = t["rtol"].max()
    ax.axhline(rtol, color="grey", ls="--", lw=1, label=f"decision rtol {rtol:.2g}")
    ax.set(
        yscale="log",
        ylabel="sigma_min / sigma_1 of M = W_O R",
        title="Margin of the rank decision",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, png_path)


def plot_readout(readout: pd.DataFrame, spectra: pd.DataFrame, png_path: str):
    """W_O spectra per layer and what readers get back of the head outputs."""
    from .plotting import plt, save, sns

    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.2))
    ax = axes[0]
    s = spectra[spectra["operator"] == "W_O"]
    sns.lineplot(
        data=s,
        x="index",
        y="value",
        hue="model",
        units="layer",
        estimator=None,
        lw=0.8,
        ax=ax,
    )
    ax.set(
        yscale="log",
        xlabel="singular value index",
        ylabel="sigma_i / sigma_1 of W_O",
        title="Reading B: spectrum of W_O",
    )

    ax = axes[1]
    cols = {
        "recovery_err_from_o": "z from o",
        "recovery_err_x_known": "z from x + o, x known",
        "recovery_err_x_unknown": "z from x + o, x unknown",
        "A_unseen_energy": "reading A: energy of z unseen (W_V)",
    }
    long = readout.melt(
        id_vars=["model", "layer"],
        value_vars=list(cols),
        var_name="what",
        value_name="value",
    )
    long["what"] = long["what"].map(cols)
    sns.lineplot(
        data=long, x="layer", y="value", hue="what", style="model", marker="o", ax=ax
    )
    ax.set(
        yscale="log",
        ylabel="relative error / energy fraction",
        title="What the reader gets back of z",
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save(fig, png_path)


def plot_symmetry(sym: pd.DataFrame, mlp: pd.DataFrame, png_path: str) -> None:
    """Output invariance error against how far z_h moved, per layer."""
    from .plotting import plt, save, sns

    def wide(df, key):
        w = df.pivot_table(
            index=["model", "layer", key, "cond", "dtype"],
            columns="metric",
            values="value",
        ).reset_index()
        gauge = w[key].eq("gauge") | w[key].eq("control")
        w["check"] = w[key] + np.where(
            gauge, ", cond(G) " + w["cond"].map("{:.0e}".format), ""
        )
        return w

    s, m = wide(sym, "transform"), wide(mlp, "decomposition")
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.4), sharey=True)
    sns.scatterplot(
        data=s,
        x="z_moved_max",
        y="out_rel_err",
        hue="check",
        style="dtype",
        ax=axes[0],
        s=25,
    )
    axes[0].set(
        title="Layer output under head symmetries",
        ylabel="relative change of the output",
    )
    sns.scatterplot(
        data=m,
        x="z_moved_max",
        y="mlp_rel_diff",
        hue="check",
        style="dtype",
        ax=axes[1],
        s=25,
    )
    axes[1].set(title="MLP output for decompositions of o")
    for ax in axes:
        ax.set(xscale="log", yscale="log", xlabel="largest relative change of a z_h")
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save(fig, png_path)
