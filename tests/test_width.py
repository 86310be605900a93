"""Tests of rankcollapse.width: spectra and residual ratios of attention in width."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rankcollapse import width

torch.set_num_threads(1)


def test_log_spaced_endpoints_and_order():
    ns = width.log_spaced(8, 2048, 9)
    assert ns == [8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    assert width.log_spaced(8, 10, 5) == [8, 9, 10]  # rounded, duplicates dropped


def test_weight_std():
    shape = width.AttentionShape(d=400, d_k=20, initializer_range=0.02)
    assert width.weight_std("init", shape) == 0.02
    assert width.weight_std("fan_in", shape) == pytest.approx(0.05)
    assert width.weight_std(0.3, shape) == 0.3
    with pytest.raises(ValueError):
        width.weight_std("xavier", shape)


def test_uniform_attention_by_hand():
    """A = 1 1^T / n has one singular value 1 (on the all-ones vector) and the rest 0,
    so sigma_2 / sigma_1 = 0; A X = 1 xbar^T has no residual. The remedy
    A - 1 1^T / n is the zero matrix."""
    n, d = 6, 4
    x = torch.arange(n * d, dtype=torch.float64).view(n, d)
    m = width.mixing_metrics(torch.full((n, n), 1.0 / n, dtype=torch.float64), x)
    assert m["sigma_1"] == pytest.approx(1.0)
    assert m["sigma_ratio"] == pytest.approx(0.0, abs=1e-12)
    assert m["res_ratio"] == pytest.approx(0.0, abs=1e-12)
    assert m["res_ratio_fro"] == pytest.approx(0.0, abs=1e-12)


def test_identity_attention_by_hand():
    """A = I (each token attends to itself): every singular value is 1, A X = X, so
    the residual ratio is that of X. For X = [[1, 0], [0, 1], [1, 1]] the token mean
    is (2/3, 2/3), the residual [[1/3, -2/3], [-2/3, 1/3], [1/3, 1/3]] has Frobenius
    norm sqrt(12/9) against sqrt(4) for X."""
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    m = width.mixing_metrics(torch.eye(3, dtype=torch.float64), x)
    assert m["sigma_ratio"] == pytest.approx(1.0)
    assert m["res_ratio_fro"] == pytest.approx(math.sqrt(12 / 9) / 2)
    assert m["signal_ratio"] == pytest.approx(1.0)


def test_lanczos_matches_full_svd():
    gen = torch.Generator().manual_seed(1)
    m = torch.softmax(torch.randn(60, 60, generator=gen, dtype=torch.float64), -1)
    full = torch.linalg.svdvals(m)[:2]
    for mat, ref in ((m, full), (m - 1 / 60, torch.linalg.svdvals(m - 1 / 60)[:2])):
        fast = width.top_singular_values(mat, 2, full_max_n=10)
        assert torch.allclose(fast, ref, rtol=1e-9, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(3, 40),
    seed=st.integers(0, 10_000),
    logits=st.sampled_from(["bilinear", "iid"]),
)
def test_row_stochastic_outlier(n, seed, logits):
    """Every row-stochastic A keeps the all-ones vector (A 1 = 1), so sigma_1 >= 1;
    the remedy sends it to 0."""
    shape = width.AttentionShape(d=16, d_k=4, initializer_range=0.5)
    gen = torch.Generator().manual_seed(seed)
    x, a = width.draw_attention(shape, n, 0.5, logits, gen)
    ones = torch.ones(n, dtype=torch.float64)
    assert x.shape == (n, 16) and a.shape == (n, n)
    assert torch.allclose(a @ ones, ones)
    assert torch.linalg.svdvals(a)[0] >= 1 - 1e-12
    assert torch.allclose(
        (a - 1 / n) @ ones, torch.zeros(n, dtype=torch.float64), atol=1e-12
    )


def test_sweep_and_summary():
    shape = width.AttentionShape(d=32, d_k=8, initializer_range=0.02)
    df = width.width_sweep(
        shape, [8, 32], 2, ["init", "fan_in"], ["bilinear"], progress=False
    )
    assert set(df.mixing) == {"softmax", "centred"}
    assert len(df) == 2 * 2 * 2 * 2 * 6  # inits, n, draws, mixings, metrics
    again = width.width_sweep(
        shape, [8, 32], 2, ["init", "fan_in"], ["bilinear"], progress=False
    )
    pd.testing.assert_frame_equal(df, again)  # seeded

    # Small logits: the softmax matrix is nearly uniform, so its gap is wide.
    df["model"] = "m"
    s = width.gap_summary(df).set_index(["weight_init", "mixing"])
    assert s.loc[("init", "softmax"), "ratio_at_n_max"] < 0.2
    assert s.loc[("init", "centred"), "ratio_at_n_max"] > 0.5


def test_gap_summary_slope_by_hand():
    """A median ratio of n^-1/2 has log-log slope -1/2."""
    ns = [8, 64, 512]
    df = pd.DataFrame(
        {
            "model": "m",
            "weight_init": "init",
            "logits": "iid",
            "mixing": "softmax",
            "n": ns,
            "draw": 0,
            "metric": "sigma_ratio",
            "value": [n**-0.5 for n in ns],
        }
    )
    row = width.gap_summary(df).iloc[0]
    assert row.slope == pytest.approx(-0.5)
    assert row.ratio_at_n_min == pytest.approx(8**-0.5)
    assert np.isclose(row.ratio_at_n_max, 512**-0.5)
