"""Tests of rankcollapse.genericity: the block against transformers' forward pass on
the real MiniLM weights, cases worked by hand, the exceptional construction, the
batching and seeding of the draws, the summaries and every outcome of the verdict.
"""

import numpy as np
import pandas as pd
import pytest
import torch

from rankcollapse import genericity as g
from rankcollapse.capture import run_and_capture
from rankcollapse.models import LayerWeights, layer_weights

SMALL = g.StackShape(d=8, n_heads=2, d_k=4, n_layers=3, init_std=0.2, ln_eps=1e-12)


def test_stack_shape_reads_minilm(minilm_path):
    assert g.stack_shape(minilm_path) == g.StackShape(
        d=384, n_heads=12, d_k=32, n_layers=6, init_std=0.02, ln_eps=1e-12
    )


@pytest.mark.parametrize("layer", [0, 4])
def test_block_matches_transformers_on_minilm(minilm, tokenizer, layer):
    """Our float64 MHA and attention sub-block reproduce the float32 model's sites."""
    model = minilm
    enc = tokenizer(
        ["Residual streams keep what attention would average away."],
        return_tensors="pt",
    )
    p = f"blocks.{layer}."
    sites = run_and_capture(
        model,
        enc["input_ids"],
        enc["attention_mask"],
        [p + "in", p + "attn.out", p + "ln1.in", p + "ln1.out"],
    )[0]
    w = layer_weights(model.encoder.layer[layer])
    x = sites[p + "in"].double()

    def close(ours, site):
        ref = sites[site].double()
        assert (ours - ref).abs().max() < 1e-5 * ref.abs().max()

    close(g.mha(x[None], w)[0], p + "attn.out")
    close(g.block(x, w, "attn+res"), p + "ln1.in")
    close(g.block(x, w, "attn+res+ln"), p + "ln1.out")


def test_uniform_attention_worked_by_hand():
    """d = 2, H = 1, d_k = 2, W_Q = W_K = 0, so A = 1 1^T / 3; W_V = W_O = I.

    X = [[1, 0], [0, 1], [1, 1]], xbar = [2/3, 2/3], MHA(X) = 1 xbar^T, so
    X + MHA(X) = [[5/3, 2/3], [2/3, 5/3], [5/3, 5/3]]: the centred states are
    those of X, and the affine rank stays 2.
    """
    z = torch.zeros
    eye = torch.eye(2, dtype=torch.float64)[None]
    w = LayerWeights(
        W_Q=z(1, 2, 2, dtype=torch.float64),
        W_K=z(1, 2, 2).double(),
        W_V=eye,
        b_Q=z(1, 2).double(),
        b_K=z(1, 2).double(),
        b_V=z(1, 2).double(),
        W_O=eye,
        b_O=z(2).double(),
        gamma1=torch.ones(2).double(),
        beta1=z(2).double(),
        eps1=1e-12,
        gamma2=torch.ones(2).double(),
        beta2=z(2).double(),
        eps2=1e-12,
    )
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    y = g.block(x, w, "attn+res")
    expected = torch.tensor([[5, 2], [2, 5], [5, 5]], dtype=torch.float64) / 3
    assert torch.allclose(y, expected, atol=1e-15)
    assert g.state_metrics(y, [])["affine_rank"] == 2


def test_exceptional_construction_collapses_onto_the_mean():
    """X + MHA(X) = 1 xbar^T exactly (float64 round-off), and LN1 keeps one point."""
    x = torch.randn(
        (5, 8), generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    w, A = g.exceptional_weights(x, SMALL, 0.5, torch.Generator().manual_seed(2))
    y = g.block(x, w, "attn+res")
    assert torch.allclose(y, x.mean(0).expand(5, 8), atol=1e-12)
    y_ln = g.block(x, w, "attn+res+ln")
    assert (y_ln - y_ln[0]).abs().max() < 1e-10
    m = g.state_metrics(torch.stack([y, y_ln]), [1e-12])
    assert m["affine_rank@1e-12"].tolist() == [0, 0]
    assert (m["affine_rank_f64"] < 4).all()  # below X's affine rank n - 1 = 4
    assert torch.allclose(A.sum(-1), torch.ones(5, dtype=torch.float64))


def test_exceptional_construction_needs_full_row_rank():
    x = torch.ones((4, 8), dtype=torch.float64)
    with pytest.raises(ValueError, match="full row rank"):
        g.exceptional_weights(x, SMALL, 0.5, torch.Generator().manual_seed(0))


def test_perturbation_leaves_the_exceptional_set_linearly():
    """sigma_min / sigma_1 grows like eps: slope 1, no eps > 0 draw stays collapsed."""
    x = torch.randn(
        (5, 8), generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    grid = g.eps_grid([-9, -5], 1)
    long = g.exceptional_trials(
        x, SMALL, qk_std=0.5, eps_grid=grid, draws=3, seed=0, rtols=[1e-3]
    )
    long.insert(0, "input", "gaussian")
    long.insert(0, "model", "small")
    table = g.exceptional_table(long, [1e-9, 1e-5])
    assert table["collapsed_at_0"].all()
    assert (table["collapsed_eps_pos"] == 0).all()
    assert np.allclose(table["slope"], 1.0, atol=0.05)


def test_eps_grid():
    assert np.allclose(g.eps_grid([-2, 0], 2), [0.01, 10**-1.5, 0.1, 10**-0.5, 1.0])


def test_draws_do_not_depend_on_chunking_and_scales_share_them():
    inputs = g.trial_inputs(["gaussian"], torch.zeros(1, 4, 8), 5, seed=0)
    kw = dict(draws=5, n_layers=2, seed=0, rtols=[1e-3])
    order = ["draw", "input", "variant", "layer", "metric"]
    a = g.random_trials(inputs, SMALL, 1.0, chunk=2, **kw).sort_values(order)
    b = g.random_trials(inputs, SMALL, 1.0, chunk=5, **kw).sort_values(order)
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))

    gens = lambda: [g.generator(0, g.WEIGHTS, k) for k in range(2)]  # noqa: E731
    w1 = g.draw_layer(gens(), SMALL, 1.0, torch.float64, "cpu")
    w3 = g.draw_layer(gens(), SMALL, 3.0, torch.float64, "cpu")
    assert torch.equal(3 * w1.W_O, w3.W_O) and torch.equal(3 * w1.W_Q, w3.W_Q)


def test_batched_advance_equals_one_draw_at_a_time():
    gens = [g.generator(0, g.WEIGHTS, k) for k in range(3)]
    w = g.draw_layer(gens, SMALL, 1.0, torch.float64, "cpu")
    x = torch.randn((3, 2, 5, 8), dtype=torch.float64)
    y = g.advance(x, w, g.variant_mask(g.VARIANTS))
    for k in range(3):
        wk = LayerWeights(
            **{
                f: (v[k] if f in ("W_Q", "W_K", "W_V", "W_O") else v)
                for f, v in vars(w).items()
            }
        )
        for v, variant in enumerate(g.VARIANTS):
            assert torch.allclose(y[k, v], g.block(x[k, v], wk, variant), atol=1e-12)


def _long(ranks: dict, ratios: dict) -> pd.DataFrame:
    rows = []
    for draw, per_layer in ranks.items():
        for layer, r in enumerate(per_layer):
            rows += [
                {
                    "model": "m",
                    "draw": draw,
                    "layer": layer,
                    "metric": "affine_rank",
                    "value": r,
                },
                {
                    "model": "m",
                    "draw": draw,
                    "layer": layer,
                    "metric": "sigma_min_ratio",
                    "value": ratios[draw][layer],
                },
            ]
    return pd.DataFrame(rows)


def test_per_unit_and_wilson_interval_worked_by_hand():
    """Draw 1 loses a dimension at layer 1 and regains it: it counts as dropped.

    Wilson 95% for 1 of 2: centre (0.5 + z^2/4) / (1 + z^2/2) = 0.5, half-width
    z sqrt(1/8 + z^2/16) / (1 + z^2/2) = 0.4055 with z = 1.96; for 0 of 100 the
    upper end is z^2 / (100 + z^2) = 0.0370.
    """
    long = _long(
        {0: [3, 3, 3], 1: [3, 2, 3]}, {0: [0.5, 0.4, 0.3], 1: [0.5, 1e-9, 0.2]}
    )
    units = g.per_unit(long, ["model"], "draw")
    assert units["dropped"].tolist() == [False, True]
    assert units["min_ratio"].tolist() == [0.3, 1e-9]
    assert units["min_ratio_layer"].tolist() == [2, 1]
    table = g.drop_table(units, ["model"], 0.95)
    assert table.loc[0, "dropped"] == 1 and table.loc[0, "fraction"] == 0.5
    assert table.loc[0, "ci_low"] == pytest.approx(0.0945, abs=1e-4)
    assert table.loc[0, "ci_high"] == pytest.approx(0.9055, abs=1e-4)
    assert g.wilson(0, 100, 0.95)[1] == pytest.approx(0.0370, abs=1e-4)


# ----------------------------------------------------------------------------
# The verdict: hand-made tables for each outcome, with and without E1's table.


def _trials(drops_at: dict | None = None) -> pd.DataFrame:
    rows = []
    for scale in (1.0, 10.0):
        for variant in g.VARIANTS:
            dropped = (drops_at or {}).get((scale, variant), 0)
            rows.append(
                {
                    "model": "m",
                    "input": "gaussian",
                    "variant": variant,
                    "scale": scale,
                    "units": 100,
                    "dropped": dropped,
                    "fraction": dropped / 100,
                    "ci_low": 0.0,
                    "ci_high": 0.04,
                    "min_ratio_min": 1e-6 if dropped else 0.1,
                }
            )
    return pd.DataFrame(rows)


def _own(dropped: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "model": "m",
                "init": "pretrained",
                "variant": v,
                "units": 96,
                "dropped": dropped,
            }
            for v in g.VARIANTS
        ]
    )


def _exceptional(collapsed_eps_pos: int = 0, collapsed_at_0=True) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "model": "m",
                "input": "gaussian",
                "variant": v,
                "collapsed_at_0": collapsed_at_0,
                "eps_draws": 100,
                "collapsed_eps_pos": collapsed_eps_pos,
                "slope": 1.0,
            }
            for v in g.VARIANTS
        ]
    )


def _e1(collapsed_models: tuple = ()) -> pd.DataFrame:
    """E1's last-layer table for models m1, m2; pure attention always collapsed."""
    rows = []
    for model in ("m1", "m2"):
        for variant in ("attn", "attn+res", "attn+res+ln"):
            collapsed = variant == "attn" or (
                model in collapsed_models and variant == "attn+res"
            )
            rows.append(
                {
                    "model": model,
                    "init": "pretrained",
                    "variant": variant,
                    "layer": 5,
                    "res_ratio_median": 1e-6 if collapsed else 0.5,
                    "affine_rank_median": 9,
                    "input_affine_rank_median": 9,
                    "collapsed": collapsed,
                }
            )
    return pd.DataFrame(rows)


def test_verdict_confirmed_without_e1():
    v = g.verdict_c2(_trials(), _own(), _exceptional())
    assert v.verdict == "confirmed"
    assert v.experiments == ["E2"]
    assert "not available" in v.evidence["E1"]


def test_verdict_confirmed_with_e1():
    v = g.verdict_c2(_trials(), _own(), _exceptional(), _e1())
    assert v.verdict == "confirmed"
    assert v.experiments == ["E1", "E2"]
    assert v.evidence["E1"].startswith("confirmed")
    assert v.evidence["E1 pure attention collapsed"] == {
        "m1/attn": True,
        "m2/attn": True,
    }


def test_verdict_qualified_by_a_larger_scale():
    v = g.verdict_c2(_trials({(10.0, "attn+res+ln"): 7}), _own(), _exceptional())
    assert v.verdict == "qualified"
    assert "scale=10" in v.summary and "7/100" in v.summary


def test_verdict_qualified_by_e1_residual_collapse_in_some_models():
    v = g.verdict_c2(_trials(), _own(), _exceptional(), _e1(("m2",)))
    assert v.verdict == "qualified"
    assert "E1" in v.summary and "m2" in v.summary


def test_verdict_reads_e1_collapsed_as_text():
    e1 = _e1(("m2",)).astype({"collapsed": str})
    assert g.verdict_c2(_trials(), _own(), _exceptional(), e1).verdict == "qualified"


@pytest.mark.parametrize(
    "tables",
    [
        dict(trials=_trials({(1.0, "attn+res"): 1})),
        dict(own=_own(dropped=2)),
        dict(exceptional=_exceptional(collapsed_eps_pos=3)),
        dict(exceptional=_exceptional(collapsed_at_0=False)),
        dict(e1=_e1(("m1", "m2"))),
    ],
)
def test_verdict_not_supported(tables):
    args = dict(trials=_trials(), own=_own(), exceptional=_exceptional(), e1=_e1())
    args |= tables
    v = g.verdict_c2(args["trials"], args["own"], args["exceptional"], args["e1"])
    assert v.verdict == "not supported"
    assert v.evidence["failing"]


def test_layer_summary_quartiles_by_hand():
    """Values 1, 2, 3, 4 at one layer: median 2.5, quartiles 1.75 and 3.25
    (linear interpolation)."""
    long = pd.DataFrame(
        {
            "model": "m",
            "layer": 0,
            "metric": "sigma_min_ratio",
            "draw": range(4),
            "value": [4.0, 1.0, 3.0, 2.0],
        }
    )
    row = g.layer_summary(long, ["model"], "sigma_min_ratio").iloc[0]
    assert (row["median"], row["q25"], row["q75"]) == (2.5, 1.75, 3.25)
