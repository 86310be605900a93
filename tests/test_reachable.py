"""Tests of rankcollapse.reachable: bases, T(X) by brute force, real MiniLM, C3.

Worked by hand:

- ``span([[1,0,0],[2,0,0],[0,0,0]])`` is the line through e1: one column, +-e1.
- ``energy_outside([[3,4,0]], e1)`` = 4^2 / (3^2 + 4^2) = 0.64.
- Two heads with d_k = 1, d = 2, ``b_V = (1, 2)``, ``W_O^1 = (1, 0)``,
  ``W_O^2 = (0, 1)``, ``b_O = (0.5, 0.5)``: ``b = (1.5, 2.5)``.
- ``W_V W_O = 0``, zero biases, gamma = 1, beta = 0, X = [e1; e2] in d = 4:
  T(X) = rowspace(X) P = span{(3,-1,-1,-1), (-1,3,-1,-1)} for both kinds
  (the affine one is span{e1 - e2, (e1 + e2) P}, the same plane).
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from rankcollapse import reachable as R
from rankcollapse.models import LayerWeights, layer_weights


def projector(basis):
    return basis @ basis.T


def random_layer(d=24, heads=2, seed=0, scale=0.3):
    """A BertLayer whose every parameter (biases, gamma, beta too) is random."""
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertLayer

    cfg = BertConfig(
        hidden_size=d,
        num_attention_heads=heads,
        intermediate_size=2 * d,
        attn_implementation="eager",
    )
    layer = BertLayer(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen))
    return layer


def block_out(x, w: LayerWeights, probs):
    """LN1(X + MHA(X)) in float64 for given attention patterns ``probs`` (H, n, n)."""
    v = torch.einsum("nd,hdk->hnk", x, w.W_V) + w.b_V[:, None]  # (H, n, d_k)
    o = torch.einsum("hnk,hkd->nd", probs @ v, w.W_O) + w.b_O  # (n, d)
    y = x + o
    mu, var = y.mean(1, keepdim=True), y.var(1, unbiased=False, keepdim=True)
    return (y - mu) / torch.sqrt(var + w.eps1) * w.gamma1 + w.beta1


def random_patterns(count, heads, n, gen):
    """Row-stochastic patterns: Dirichlet rows, with some one-hot rows mixed in."""
    a = -torch.log(torch.rand(count, heads, n, n, generator=gen, dtype=torch.float64))
    a = a**3  # sharper rows, so the samples reach near the simplex's corners
    return a / a.sum(-1, keepdim=True)


# ----------------------------------------------------------------------------
# Cases worked by hand.


def test_span_and_energy_by_hand():
    q = R.span(torch.tensor([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 0]]))
    assert q.shape == (3, 1)
    assert torch.allclose(
        q.abs().squeeze(), torch.tensor([1.0, 0, 0], dtype=torch.float64)
    )
    total, worst = R.energy_outside(torch.tensor([[3.0, 4.0, 0.0]]), q)
    assert total == pytest.approx(0.64) and worst == pytest.approx(0.64)


def hand_weights(d=4, W_V=None, W_O=None, b_V=None, b_O=None):
    z = torch.zeros
    return LayerWeights(
        W_Q=z(1, d, 1, dtype=torch.float64),
        W_K=z(1, d, 1, dtype=torch.float64),
        W_V=z(1, d, 1, dtype=torch.float64) if W_V is None else W_V,
        b_Q=z(1, 1, dtype=torch.float64),
        b_K=z(1, 1, dtype=torch.float64),
        b_V=z(1, 1, dtype=torch.float64) if b_V is None else b_V,
        W_O=z(1, 1, d, dtype=torch.float64) if W_O is None else W_O,
        b_O=z(d, dtype=torch.float64) if b_O is None else b_O,
        gamma1=torch.ones(d, dtype=torch.float64),
        beta1=z(d, dtype=torch.float64),
        eps1=1e-12,
        gamma2=torch.ones(d, dtype=torch.float64),
        beta2=z(d, dtype=torch.float64),
        eps2=1e-12,
    )


def test_value_bias_by_hand():
    w = hand_weights(
        d=2,
        W_V=torch.zeros(2, 2, 1, dtype=torch.float64),
        W_O=torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]], dtype=torch.float64),
        b_V=torch.tensor([[1.0], [2.0]], dtype=torch.float64),
        b_O=torch.tensor([0.5, 0.5], dtype=torch.float64),
    )
    assert torch.allclose(
        R.value_bias(w), torch.tensor([1.5, 2.5], dtype=torch.float64)
    )


def test_reachable_by_hand_no_values():
    w = hand_weights()
    x = torch.eye(4, dtype=torch.float64)[:2]
    expect = R.span(torch.tensor([[3.0, -1, -1, -1], [-1.0, 3, -1, -1]]))
    for kind in ("linear", "affine"):
        q = R.reachable_subspace(x, w, kind)
        assert q.shape[1] == 2
        assert torch.allclose(projector(q), projector(expect), atol=1e-12)


def test_bounds():
    # MiniLM: n = 29 gives 29 * 13 + 2 = 379 < 384, n = 30 gives 392.
    assert R.max_length(384, 12) == 29
    assert R.dim_bound(29, 12, "linear") < 384 <= R.dim_bound(30, 12, "linear")
    assert R.max_length(384, 12, "affine") == 30
    assert R.dim_bound(30, 12, "affine") < 384 <= R.dim_bound(31, 12, "affine")


# ----------------------------------------------------------------------------
# Brute force on a small random block.


def test_sampled_patterns_fill_exactly_the_affine_subspace():
    """Outputs for many random patterns lie in T_affine and span all of it."""
    n, heads = 3, 2
    w = layer_weights(random_layer(d=24, heads=heads))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 24, generator=gen, dtype=torch.float64)

    samples = torch.cat(
        [block_out(x, w, a) for a in random_patterns(200, heads, n, gen)]
    )  # (200 n, d)
    q_aff = R.reachable_subspace(x, w, "affine")
    q_lin = R.reachable_subspace(x, w, "linear")

    # Inside: round-off of float64 only.
    assert R.energy_outside(samples, q_aff)[1] < 1e-24
    # Not larger than needed: the samples span T_affine, of the bound's dimension.
    s = torch.linalg.svdvals(samples)
    assert int((s > 1e-10 * s[0]).sum()) == q_aff.shape[1]
    assert q_aff.shape[1] == R.dim_bound(n, heads, "affine") == 8
    assert R.energy_outside(q_aff.T, R.span(samples))[1] < 1e-20
    # The spec's linear T contains it, with H more directions.
    assert q_lin.shape[1] == R.dim_bound(n, heads, "linear") == 11
    assert R.energy_outside(q_aff.T, q_lin)[1] < 1e-20


def test_module_forward_lies_inside():
    """The layer's own attention sub-block (float64, softmax patterns) stays in T."""
    layer = random_layer(d=24, heads=3, seed=2).double()
    w = layer_weights(layer)
    x = torch.randn(
        1, 4, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    with torch.no_grad():
        out, probs = layer.attention(x)
    assert torch.allclose(out[0], block_out(x[0], w, probs[0]), atol=1e-12)
    assert R.energy_outside(out[0], R.reachable_subspace(x[0], w, "affine"))[1] < 1e-24


def test_two_layer_propagation_by_brute_force():
    """Two attention sub-blocks: the propagated T_2 holds the outputs and is tight."""
    n, heads, d = 3, 1, 40
    w1 = layer_weights(random_layer(d=d, heads=heads, seed=4))
    w2 = layer_weights(random_layer(d=d, heads=heads, seed=5))
    gen = torch.Generator().manual_seed(6)
    x0 = torch.randn(n, d, generator=gen, dtype=torch.float64)

    t1, t2 = R.propagate(x0, [w1, w2])
    assert torch.allclose(
        projector(t1), projector(R.reachable_subspace(x0, w1, "affine"))
    )
    assert (t1.shape[1], t2.shape[1]) == (6, 12)  # (n-1)(H+1)+2, then (6-1)(H+1)+2

    samples = []
    for a1, a2 in zip(
        random_patterns(150, heads, n, gen),
        random_patterns(150, heads, n, gen),
        strict=True,
    ):
        samples.append(block_out(block_out(x0, w1, a1), w2, a2))
    samples = torch.cat(samples)
    assert R.energy_outside(samples, t2)[1] < 1e-24
    s = torch.linalg.svdvals(samples)
    assert int((s > 1e-10 * s[0]).sum()) == 12
    # The spec's linear step from T_1 would give (H+1)6+2 = 14: not tight.
    assert R.reachable_subspace(t1.T, w2, "linear").shape[1] == 14


# ----------------------------------------------------------------------------
# Real MiniLM weights.


IDS = torch.tensor([101, 1996, 4937, 2938, 2006, 1996, 13523, 1012, 102])


def test_attention_only_stack_matches_transformers(minilm):
    """X_1 of the attention-only stack is the model's own ln1.out of layer 0."""
    from rankcollapse.capture import run_and_capture

    x1 = R.attention_only_states(minilm, IDS, 1)[0]
    cap = run_and_capture(
        minilm,
        IDS[None],
        torch.ones(1, len(IDS), dtype=torch.long),
        ["blocks.0.ln1.out"],
    )[0]
    assert torch.equal(x1, cap["blocks.0.ln1.out"])


def test_minilm_attention_inside_mlp_outside(minilm):
    from rankcollapse.capture import run_and_capture

    weights = R.model_weights(minilm)
    sites = [
        f"blocks.{l}.{s}" for l in range(6) for s in ("in", "ln1.out", "mlp.out", "out")
    ]
    cap = run_and_capture(
        minilm, IDS[None], torch.ones(1, len(IDS), dtype=torch.long), sites
    )[0]
    df = pd.DataFrame(R.layer_energy_rows(cap, weights))
    e = df[df.metric == "energy_outside_max_token"]
    attn = e[(e.site == "attn_block") & (e.subspace != "input_span")]["value"]
    assert attn.max() < 1e-10  # float32 round-off, squared
    mlp = e[(e.site == "mlp") & (e.subspace == "linear")]["value"]
    assert mlp.min() > 1e-2
    dims = df[(df.metric == "dim") & (df.subspace == "linear")]["value"]
    assert (dims == 9 * 13 + 2).all()


def test_minilm_propagation_stops_when_T_fills(minilm):
    rows = pd.DataFrame(
        R.propagation_rows(
            minilm, IDS[:4], [layer_weights(layer) for layer in minilm.encoder.layer]
        )
    )
    dims = rows[rows.metric == "dim"].set_index("layer")["value"]
    assert dims.to_dict() == {1: 41.0, 2: 384.0}  # 3 * 13 + 2, then all of R^384
    assert (rows[rows.metric == "ln_range_dim"]["value"] == 384).all()
    stack = rows[
        (rows["stack"] == "attention_only")
        & (rows.subspace == "reachable")
        & (rows.layer == 1)
        & (rows.metric == "energy_outside")
    ]
    assert stack["value"].item() < 1e-12


# ----------------------------------------------------------------------------
# Verdict C3 on hand-made tables.


CFG = {
    "inside_max": 1e-8,
    "outside_min": 1e-2,
    "containment_subspace": "affine",
    "generation_subspace": "linear",
}


def tables(attn=1e-14, mlp=0.3, literal=0.2, fill=False, share=1.0):
    """Energy, propagation and regime tables for one model, d = 10."""
    energy = []
    for sub in ("input_span", "affine", "linear"):
        energy.append(dict(subspace=sub, site=None, metric="dim", value=5.0))
        for site, v in (("attn_block", attn), ("mlp", mlp), ("layer", mlp)):
            energy.append(
                dict(subspace=sub, site=site, metric="energy_outside", value=v)
            )
    energy = pd.DataFrame(energy).assign(model="m", d=10, seq=0, n=2, layer=0)
    prop = [
        dict(layer=1, stack=None, subspace="reachable", metric="dim", value=5.0),
        dict(
            layer=1, stack=None, subspace="reachable", metric="ln_range_dim", value=10.0
        ),
    ]
    for stack, v in (("attention_only", attn), ("full", mlp)):
        prop.append(
            dict(
                layer=1,
                stack=stack,
                subspace="reachable",
                metric="energy_outside",
                value=v,
            )
        )
        prop.append(
            dict(
                layer=1,
                stack=stack,
                subspace="input_span",
                metric="energy_outside",
                value=literal if stack == "attention_only" else mlp,
            )
        )
    if fill:
        prop += [
            dict(layer=2, stack=None, subspace="reachable", metric=metric, value=10.0)
            for metric in ("dim", "ln_range_dim")
        ]
        prop += [
            dict(
                layer=2,
                stack=stack,
                subspace="reachable",
                metric="energy_outside",
                value=0.0,
            )
            for stack in ("attention_only", "full")
        ]
    prop = pd.DataFrame(prop).assign(model="m", d=10, seq=0, n=2)
    regime = pd.DataFrame([dict(model="m", share_in_regime=share)])
    return energy, prop, regime


@pytest.mark.parametrize(
    "kwargs, outcome",
    [
        (dict(literal=1e-15), "confirmed"),
        (dict(), "qualified"),
        (dict(literal=1e-15, fill=True), "qualified"),
        (dict(literal=1e-15, share=0.5), "qualified"),
        (dict(attn=1e-3), "not supported"),
        (dict(mlp=1e-3), "not supported"),  # the MLP output: below outside_min
        (dict(mlp=1e-9), "not supported"),  # and the full states: round-off only
    ],
)
def test_verdict_c3(kwargs, outcome):
    v = R.verdict_c3(*tables(**kwargs), CFG)
    assert v.verdict == outcome
    assert not math.isnan(v.evidence["attn_block_max_energy_outside"]["m"])


def test_ln_range_of_a_fresh_layer_is_a_hyperplane():
    """gamma = 1, beta = 0: every LN output has zero mean, so the range is 1^perp."""
    w = hand_weights(d=5)
    q = R.ln_range(w)
    assert q.shape[1] == 4
    assert R.energy_outside(torch.ones(1, 5), q)[0] == pytest.approx(1.0)
    w.beta1 = torch.ones(5, dtype=torch.float64)
    assert R.ln_range(w).shape[1] == 5
