"""Metrics on matrices whose values are worked out by hand."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rankcollapse import metrics


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_one_point_has_rank_one_and_affine_rank_zero():
    """Three copies of x = (1, 2): X has rank 1; X - 1 xbar^T = 0, affine rank 0,
    residual ratio 0, cosine 1 between every pair."""
    m = metrics.token_metrics(t([[1, 2], [1, 2], [1, 2]]))
    assert m["rank"] == 1 and m["affine_rank"] == 0
    assert m["res_ratio"] == 0 and m["res_ratio_fro"] == 0
    assert m["mean_cosine"] == pytest.approx(1.0)
    assert m["effective_rank"] == 0 and m["stable_rank"] == 0


def test_collinear_points_off_origin():
    """(1,0), (1,1), (1,2) lie on the line x = 1, off the origin: rank 2 (the line
    does not pass through 0), affine rank 1 (one direction, (0,1))."""
    m = metrics.token_metrics(t([[1, 0], [1, 1], [1, 2]]))
    assert m["rank"] == 2 and m["affine_rank"] == 1
    assert m["effective_rank"] == pytest.approx(1.0)
    assert m["stable_rank"] == pytest.approx(1.0)


def test_residual_ratio_by_hand():
    """X = [[1, 0], [3, 0]]: xbar = (2, 0), residual R = [[-1, 0], [1, 0]].
    ||R||_1 = 2 (column sum), ||R||_inf = 1 (row sum): composite sqrt(2).
    ||X||_1 = 4, ||X||_inf = 3: composite sqrt(12). Ratio sqrt(2/12).
    Frobenius: sqrt(2) / sqrt(10)."""
    m = metrics.token_metrics(t([[1, 0], [3, 0]]))
    assert m["res_ratio"].item() == pytest.approx(math.sqrt(2 / 12))
    assert m["res_ratio_fro"].item() == pytest.approx(math.sqrt(2 / 10))


def test_cosine_of_orthogonal_tokens_is_zero():
    m = metrics.token_metrics(t([[1, 0, 0], [0, 1, 0], [0, 0, 1]]))
    assert m["mean_cosine"].item() == pytest.approx(0.0)
    assert m["rank"] == 3 and m["affine_rank"] == 2


def test_effective_and_stable_rank_of_equal_spectrum():
    """Centred rows +-e1, +-e2 (four tokens): singular values sqrt(2), sqrt(2), so
    effective rank exp(log 2) = 2 and stable rank 4 / 2 = 2."""
    m = metrics.token_metrics(t([[1, 0], [-1, 0], [0, 1], [0, -1]]))
    assert m["effective_rank"].item() == pytest.approx(2.0)
    assert m["stable_rank"].item() == pytest.approx(2.0)


def test_tolerances_split_a_small_singular_value():
    """diag(1, 1e-5): rank 2 at the default tolerance (2 * eps32 ~ 2.4e-7), rank 1
    at rtol 1e-4."""
    m = metrics.token_metrics(t([[1, 0], [0, 1e-5]]), rtols=[1e-4])
    assert m["rank"] == 2 and m["rank@0.0001"] == 1


def test_batched_equals_one_by_one():
    x = torch.randn(5, 7, 4, dtype=torch.float64)
    batched = metrics.token_metrics(x)
    for i in range(5):
        single = metrics.token_metrics(x[i])
        for key, value in single.items():
            assert batched[key][i].item() == pytest.approx(value.item())


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, (6, 5), elements=st.floats(-10, 10)),
    arrays(np.float64, (5,), elements=st.floats(-10, 10)),
)
def test_centring_is_invariant_to_translation(x, c):
    """Residual (centred matrix) does not change when every token moves by c."""
    x = torch.tensor(x)
    shifted = x + torch.tensor(c)
    assert torch.allclose(metrics.centre(x), metrics.centre(shifted), atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (6, 4), elements=st.floats(-10, 10)))
def test_affine_rank_at_most_rank(x):
    """Centring is a projection, so sigma_i(PX) <= sigma_i(X) for every i: with a
    common threshold the affine rank never exceeds the rank."""
    m = metrics.token_metrics(torch.tensor(x))
    assert m["affine_rank"] <= m["rank"]
    assert 0 <= m["res_ratio_fro"] <= 1 + 1e-12
