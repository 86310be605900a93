"""LayerNorm's matrix form against torch, and rank cases worked out by hand."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rankcollapse import corpus, layernorm, metrics


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def ln(x, gamma=None, beta=None, eps=0.0):
    d = x.shape[1]
    gamma = torch.ones(d, dtype=torch.float64) if gamma is None else t(gamma)
    beta = torch.zeros(d, dtype=torch.float64) if beta is None else t(beta)
    return layernorm.layernorm_matrix_form(x, gamma, beta, eps)


def ranks(x):
    m = metrics.token_metrics(x)
    return int(m["rank"]), int(m["affine_rank"])


# ----------------------------------------------------------------------------
# The matrix form.


def test_centring_matrix_by_hand():
    """d = 2: P = [[1/2, -1/2], [-1/2, 1/2]]; (3, 1) P = (1, -1)."""
    p = layernorm.centring_matrix(2)
    assert torch.equal(p, t([[0.5, -0.5], [-0.5, 0.5]]))
    assert torch.equal(t([[3, 1]]) @ p, t([[1, -1]]))


def test_matrix_form_by_hand():
    """d = 2, eps = 0: (3, 1) -> x P = (1, -1), sigma = 1 -> (1, -1); with
    gamma = (2, 3), beta = (1, 1): (2 + 1, -3 + 1) = (3, -2). With eps = 3:
    sigma = sqrt(1 + 3) = 2, so gamma = 1, beta = 0 gives (1/2, -1/2)."""
    x = t([[3, 1]])
    assert torch.allclose(ln(x), t([[1, -1]]))
    assert torch.allclose(ln(x, [2, 3], [1, 1]), t([[3, -2]]))
    assert torch.allclose(ln(x, eps=3.0), t([[0.5, -0.5]]))


def test_matrix_form_equals_every_minilm_layernorm(minilm):
    """Each of MiniLM's 13 LayerNorms (torch.nn.LayerNorm, eps = 1e-12), run in
    float64 on a random token set, equals D^-1 X P Gamma + 1 beta^T."""
    sites = layernorm.ln_sites(minilm)
    assert len(sites) == 1 + 2 * minilm.config.num_hidden_layers
    x = 3.0 * torch.randn(7, minilm.config.hidden_size, dtype=torch.float64) + 1.0
    for site in sites:
        module = site.module
        ref = torch.nn.functional.layer_norm(
            x, (x.shape[1],), module.weight.double(), module.bias.double(), module.eps
        )
        ours = layernorm.layernorm_matrix_form(
            x, module.weight.double(), module.bias.double(), module.eps
        )
        assert torch.allclose(ours, ref, atol=1e-12, rtol=0), site.name


def test_eps_enters_inside_the_root(minilm):
    """With eps raised to 0.5 the module and the matrix form still agree, and
    leaving eps out of the form then visibly differs: eps is part of D."""
    module = minilm.embeddings.LayerNorm
    x = 0.3 * torch.randn(5, module.weight.numel(), dtype=torch.float64)
    g, b = module.weight.double(), module.bias.double()
    ref = torch.nn.functional.layer_norm(x, (x.shape[1],), g, b, 0.5)
    assert torch.allclose(layernorm.layernorm_matrix_form(x, g, b, 0.5), ref)
    assert not torch.allclose(layernorm.layernorm_matrix_form(x, g, b, 0.0), ref)


def test_captured_outputs_match_the_matrix_form(minilm, tokenizer):
    """On two real sentences: every LayerNorm's captured float32 output equals
    the float64 matrix form of its captured input to float32 round-off; ranks
    are recorded for both beta variants and both sides."""
    seqs = corpus.tokenise(
        ["Where did you park?", "Close the door."], tokenizer, {}, 512
    )
    ranks_df, spectra = layernorm.real_site_ranks(
        minilm, "minilm", seqs, 2, [1e-3], "corpus", spectra_sequences=1
    )
    err = ranks_df[ranks_df.metric == "form_err"].value
    assert len(err) == 2 * 13 and err.max() < 1e-4
    check = layernorm.form_check(ranks_df).set_index("kind")
    assert check.layernorms.to_dict() == {"embed": 1, "ln1": 6, "ln2": 6}
    counts = layernorm.count_changes(ranks_df)
    assert set(counts.beta) == {"model", "zero"}
    assert set(counts.tolerance) == {"default", "0.001"}
    assert (counts.total == counts.preserved + counts.raised + counts.lowered).all()
    assert set(spectra.seq) == {0}


def test_ln_params_finds_minilm_near_zero_gammas(minilm):
    """The last LayerNorm of MiniLM has gamma entries near 1e-33 (counted) and
    no other LayerNorm has any."""
    params = layernorm.ln_params(minilm, "minilm", 1e-6)
    assert len(params) == 13
    last = params[params.ln == "blocks.5.ln2"].iloc[0]
    assert last.gamma_near_zero >= 2 and last.gamma_min_abs < 1e-20
    assert (params[params.ln != "blocks.5.ln2"].gamma_near_zero == 0).all()


# ----------------------------------------------------------------------------
# Rank cases worked out by hand (gamma = 1, beta = 0, eps = 0 unless said).


def test_three_collinear_points_off_the_origin_gain_affine_rank():
    """x_t = c + t u, c = (1, -1, 0), u = (0, 1, -1), t = 0, 1, 2: rows of zero
    mean, so LN(x) = sqrt(3) x / |x|. Inputs are collinear: affine rank 1, rank 2.
    Outputs sqrt(3/2)(1, -1, 0), sqrt(3/2)(1, 0, -1), (1, 1, -2)/sqrt(2) lie on the
    circle of radius sqrt(3) in the plane 1^perp; three distinct points on a
    circle are not collinear: affine rank 2, rank 2."""
    x = t([[1, -1, 0], [1, 0, -1], [1, 1, -2]])
    y = ln(x)
    s = math.sqrt(1.5)
    r = 1 / math.sqrt(2)
    assert torch.allclose(y, t([[s, -s, 0], [s, 0, -s], [r, r, -2 * r]]))
    assert ranks(x) == (2, 1)
    assert ranks(y) == (2, 2)


def test_points_that_differ_along_ones_collapse():
    """(1, 2, 3), (2, 3, 4), (11, 12, 13): x_i = x_1 + t_i 1, affine rank 1,
    rank 2. Centring removes t_i 1, so all three give (-1, 0, 1) / sqrt(2/3):
    one point, affine rank 0, rank 1. Both ranks drop, beta = 0 or not."""
    x = t([[1, 2, 3], [2, 3, 4], [11, 12, 13]])
    y = ln(x)
    assert torch.allclose(y, t([[-1, 0, 1]]).repeat(3, 1) * math.sqrt(1.5))
    assert ranks(x) == (2, 1)
    assert ranks(y) == (1, 0)
    assert ranks(ln(x, beta=[1, 0, 0]))[1] == 0


def test_points_on_a_ray_collapse():
    """x, 2x and y with x = (1, 0, -1), y = (0, 1, -1): a triangle, affine rank 2
    (its hull holds the origin: 2x - x = x). LN is scale invariant (eps = 0), so
    x and 2x both give sqrt(3/2)(1, 0, -1): two points, affine rank 1."""
    x = t([[1, 0, -1], [2, 0, -2], [0, 1, -1]])
    y = ln(x)
    assert torch.allclose(y[0], y[1])
    assert ranks(x) == (2, 2)
    assert ranks(y) == (2, 1)


def test_more_tokens_than_width_lose_a_rank():
    """d = 2: every token (a, b) is centred to ((a-b)/2, (b-a)/2) and scaled to
    sign(a - b) (1, -1). (3, 1), (0, 2), (5, 4): rank 2, affine rank 2 (a
    triangle in the plane); LN gives (1, -1), (-1, 1), (1, -1): rank 1, affine
    rank 1. With beta = (1, 0) the rows (2, -1), (0, 1) span the plane again:
    rank 2, affine rank still 1."""
    x = t([[3, 1], [0, 2], [5, 4]])
    y = ln(x)
    assert torch.allclose(y, t([[1, -1], [-1, 1], [1, -1]]))
    assert ranks(x) == (2, 2)
    assert ranks(y) == (1, 1)
    assert ranks(ln(x, beta=[1, 0])) == (2, 1)


def test_zero_gammas_lower_matrix_rank():
    """gamma = (0, 0, 1), x_t = (1, 2, 6) + t (1, -1, 0), t = 0, 1, 2: centred
    rows (-2, -1, 3), (-1, -2, 3), (0, -3, 3) with variances 14/3, 14/3, 6; gamma
    keeps only the last coordinate: (0, 0, 3 / sqrt(14/3)) twice and
    (0, 0, 3 / sqrt(6)). Rank 2 -> 1; the affine rank stays 1, because D rescales
    the one remaining point by two different sigmas."""
    x = t([[1, 2, 6], [2, 1, 6], [3, 0, 6]])
    y = ln(x, gamma=[0, 0, 1])
    a, b = 3 / math.sqrt(14 / 3), 3 / math.sqrt(6)
    assert torch.allclose(y, t([[0, 0, a], [0, 0, a], [0, 0, b]]))
    assert ranks(x) == (2, 1)
    assert ranks(y) == (1, 1)


def test_beta_raises_matrix_rank_of_a_hull_through_the_origin():
    """(1, -1, 0) and (-1, 1, 0): zero-mean rows, hull through the origin, rank 1,
    affine rank 1. LN (beta = 0) gives +-sqrt(3/2)(1, -1, 0): rank 1 kept. With
    beta = (1, 1, 1) the rows are 1 +- sqrt(3/2)(1, -1, 0): rank 2, affine 1."""
    x = t([[1, -1, 0], [-1, 1, 0]])
    assert ranks(x) == (1, 1)
    assert ranks(ln(x)) == (1, 1)
    assert ranks(ln(x, beta=[1, 1, 1])) == (2, 1)


# ----------------------------------------------------------------------------
# Identities that hold for every input.

tokens = arrays(
    np.float64,
    st.tuples(st.integers(2, 6), st.integers(3, 7)),
    elements=st.floats(-10, 10, allow_nan=False, width=32),
)


@settings(max_examples=60, deadline=None)
@given(tokens, st.integers(0, 2**16))
def test_centred_output_does_not_depend_on_beta(x, seed):
    """LN(X) - 1 mean = D^-1 X P Gamma - 1 mean: beta cancels, so the affine rank
    of the output is the same for every beta."""
    x = torch.from_numpy(x)
    g = torch.Generator().manual_seed(seed)
    d = x.shape[1]
    gamma = torch.randn(d, generator=g, dtype=torch.float64)
    beta = torch.randn(d, generator=g, dtype=torch.float64)
    zero = torch.zeros(d, dtype=torch.float64)
    a = metrics.centre(layernorm.layernorm_matrix_form(x, gamma, beta, 1e-5))
    b = metrics.centre(layernorm.layernorm_matrix_form(x, gamma, zero, 1e-5))
    assert torch.allclose(a, b, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(tokens)
def test_output_with_zero_beta_is_orthogonal_to_gamma_inverse_ones(x):
    """With beta = 0 every row z = x P Gamma / sigma has z . (Gamma^-1 1) = sum of
    x P = 0: the output lies in a (d-1)-dimensional subspace, so n >= d tokens
    always lose matrix rank."""
    x = torch.from_numpy(x)
    d = x.shape[1]
    gamma = torch.linspace(0.5, 2.0, d, dtype=torch.float64)
    z = layernorm.layernorm_matrix_form(x, gamma, torch.zeros(d, dtype=x.dtype), 1e-5)
    assert torch.allclose(
        z @ (1 / gamma), torch.zeros(len(z), dtype=x.dtype), atol=1e-9
    )


# ----------------------------------------------------------------------------
# Synthetic families.

CFG = {
    "families": ["F1", "F2", "F3", "F4", "F5", "F6", "F7"],
    "n_fractions": [0.5, 1.5],
    "r": 3,
    "eps": 1e-12,
    "draws": 1,
    "seed": 0,
    "gammas": ["ones", "zeros"],
    "gamma_zeros": 2,
    "beta_scale": 1.0,
    "f5": {"n": 8, "log10_delta": [-4, 0], "points": 5},
}


@pytest.mark.parametrize(
    "name,expected",
    [("F2", (3, 3)), ("F3", (4, 3)), ("F4", (2, 1)), ("F6", (3, 3)), ("F7", (2, 1))],
)
def test_families_have_the_ranks_they_are_built_with(name, expected):
    """F2: r-dim subspace, hull through 0; F3: shifted off 0 (one more matrix
    rank); F4, F7: a line off 0 (rank 2, affine 1); F6: r rays (rank r, hull
    through 0 because one ray holds two points)."""
    rng = np.random.default_rng(1)
    assert ranks(layernorm.family(name, 10, 16, 3, rng)) == expected


def test_synthetic_sweep_records_every_case():
    table = layernorm.synthetic_ranks(12, CFG, [1e-3])
    summary = layernorm.synthetic_table(table, tolerances=("float64",))
    # 6 families x 2 n + F5 x 5 deltas, each x 2 gammas x 2 betas
    assert len(summary) == (6 * 2 + 5) * 2 * 2
    f4 = summary[summary.family == "F4"]
    assert (f4.affine_rank_in == 1).all() and (f4.affine_rank_out == 0).all()
    f3 = summary[summary.family == "F3"]
    assert (f3.affine_rank_change == 1).all()
    slopes = layernorm.f5_slopes(table, 1e-12)
    assert len(slopes) == 2 * 2
    assert slopes["slope_sigma_r+1_out"].between(1.5, 2.5).all()


# ----------------------------------------------------------------------------
# The verdict, from hand-made tables.


def counts(changed=0, long_lowered=0, total=100):
    """Real-site counts: ``changed`` of ``total`` corpus applications lowered."""
    rows = []
    for rank in ("matrix", "affine"):
        for beta in ("model", "zero"):
            rows.append(
                dict(
                    model="m",
                    setting="corpus",
                    kind="ln1",
                    beta=beta,
                    rank=rank,
                    tolerance="default",
                    total=total,
                    preserved=total - changed,
                    raised=0,
                    lowered=changed,
                    max_change=int(changed > 0),
                    n_min=5,
                    n_max=9,
                    d=64,
                )
            )
            rows.append(
                dict(
                    model="m",
                    setting="long",
                    kind="ln1",
                    beta=beta,
                    rank=rank,
                    tolerance="default",
                    total=2,
                    preserved=2 - long_lowered,
                    raised=0,
                    lowered=long_lowered,
                    max_change=1,
                    n_min=96,
                    n_max=96,
                    d=64,
                )
            )
    return pd.DataFrame(rows)


def synthetic(affine_change=0, rank_change=0):
    rows = []
    for fam in ("F1", "F3"):
        for beta in ("zero", "random"):
            rows.append(
                dict(
                    tolerance="float64",
                    d=64,
                    family=fam,
                    n=8,
                    n_regime="n < d",
                    delta=float("nan"),
                    gamma="ones",
                    beta=beta,
                    rank_in=5,
                    rank_out=5 + rank_change,
                    rank_change=rank_change,
                    affine_rank_in=4,
                    affine_rank_out=4 + affine_change,
                    affine_rank_change=affine_change,
                    agree=True,
                )
            )
    return pd.DataFrame(rows)


CFG_V = {"max_real_change_fraction": 0.01, "synthetic_tolerance": "float64"}


def test_verdict_confirmed_when_nothing_changes():
    v = layernorm.verdict_c1(counts(), synthetic(), CFG_V)
    assert v.verdict == "confirmed"


def test_verdict_qualified_by_a_synthetic_family():
    """F1 and F3 both gain an affine rank: the claim holds at real sites only."""
    v = layernorm.verdict_c1(counts(), synthetic(affine_change=1), CFG_V)
    assert v.verdict == "qualified"
    assert "F3 +1" in v.evidence["affine rank: fails in"]
    assert "matrix rank, beta = 0: fails in" not in v.evidence


def test_verdict_qualified_by_long_real_sequences():
    v = layernorm.verdict_c1(counts(long_lowered=2), synthetic(), CFG_V)
    assert v.verdict == "qualified"
    assert "real m (long" in v.evidence["matrix rank, beta = 0: fails in"]


def test_verdict_not_supported_when_real_sites_change():
    """2 of 100 corpus applications changed > 1%: not supported."""
    v = layernorm.verdict_c1(counts(changed=2), synthetic(), CFG_V)
    assert v.verdict == "not supported"
    v = layernorm.verdict_c1(counts(changed=1), synthetic(), CFG_V)
    assert v.verdict == "qualified"
