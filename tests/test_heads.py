"""Tests of rankcollapse.heads: hand-worked kernels, the n(H-1)d_k count as a
property, and the head symmetries and MLP check on the real MiniLM weights against
transformers' own forward pass; then the C4 verdict on hand-made tables."""

import copy
import io

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rankcollapse import heads
from rankcollapse.models import layer_weights

torch.set_num_threads(1)

CFG = {
    "n_values": [1, 2, 3],
    "full_check_max_n": 2,
    "readers": ["W_V"],
    "last_layer_reader": "random",
    "rtol": None,
    "smallest_k": 3,
    "sequences": 2,
    "symmetry_sequences": 2,
    "gauge_cond": [1.0, 1.0e6],
    "dtypes": ["float32", "float64"],
    "seed": 0,
    "verdict_dtype": "float64",
    "roundoff_factor": 1000,
    "moved_tol": 1.0e-2,
    "recover_tol": 1.0e-2,
}


# ----------------------------------------------------------------------------
# Reading A on hand-made and random weights.


def test_kernel_two_heads_by_hand():
    """H = 2 heads of d_k = 1, d = 2, W_O^1 = e_1, W_O^2 = e_2, reader R = (1, 1)^T.

    The reader sees o R = z_1 + z_2 at each position: M = [[1], [1]], rank 1, so
    one position leaves 2 - 1 = 1 free direction, z = (1, -1), and n positions
    leave n = n(H-1)d_k.
    """
    W_O = torch.eye(2, dtype=torch.float64).view(2, 1, 2)
    R = torch.ones(2, 1, dtype=torch.float64)
    M = heads.reader_map(W_O, R)
    assert M.tolist() == [[1.0], [1.0]]
    assert heads.kernel_dim(M, 1e-12) == (1, 1)
    assert (torch.tensor([[1.0, -1.0]], dtype=torch.float64) @ M).abs().max() == 0
    for n in (1, 2, 5):
        assert heads.kernel_dim(heads.positions_map(M, n), 1e-12)[0] == n


def test_blind_reader_sees_nothing():
    """R orthogonal to every W_O^h: M = 0, all n H d_k directions are free."""
    W_O = torch.zeros(3, 2, 8, dtype=torch.float64)
    W_O[..., :4] = torch.randn(3, 2, 4, dtype=torch.float64)
    R = torch.zeros(8, 2, dtype=torch.float64)
    R[4:] = torch.randn(4, 2, dtype=torch.float64)
    M = heads.reader_map(W_O, R)
    assert heads.kernel_dims(M, [1e-12])[0][1] == 0
    assert heads.kernel_dim(heads.positions_map(M, 2), 1e-12, sigma_1=1.0)[0] == 12


@settings(max_examples=25, deadline=None)
@given(
    H=st.integers(1, 5),
    d_k=st.integers(1, 4),
    n=st.integers(1, 3),
    drop=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_kernel_count_property(H, d_k, n, drop, seed):
    """For Gaussian W_O (H d_k = d) and a reader R of rank r = d_k - drop, the
    kernel of I_n (x) M has dimension n (H d_k - r): n(H-1)d_k when R has full
    rank, and the full matrix agrees with the block count."""
    g = torch.Generator().manual_seed(seed)
    d = H * d_k
    r = max(d_k - drop, 0)
    W_O = torch.randn(H, d_k, d, generator=g, dtype=torch.float64)
    R = torch.randn(d, r, generator=g, dtype=torch.float64) @ torch.randn(
        r, d_k, generator=g, dtype=torch.float64
    )
    M = heads.reader_map(W_O, R)
    s1 = float(torch.linalg.svdvals(M)[0]) if r else 1.0
    block = heads.kernel_dim(M, 1e-9, sigma_1=s1)[0]
    full = heads.kernel_dim(heads.positions_map(M, n), 1e-9, sigma_1=s1)[0]
    assert block == H * d_k - r
    assert full == n * block
    if r == d_k:
        assert full == n * (H - 1) * d_k


def test_random_gauge_condition_and_volume():
    g = torch.Generator().manual_seed(1)
    for cond in (1.0, 1e2, 1e6):
        G = heads.random_gauge(8, cond, g)
        s = torch.linalg.svdvals(G)
        assert float(s[0] / s[-1]) == pytest.approx(cond, rel=1e-6)
        assert float(torch.linalg.det(G).abs()) == pytest.approx(1.0, rel=1e-6)


def test_derangement_moves_every_head():
    g = torch.Generator().manual_seed(0)
    for H in (2, 3, 12):
        perm = heads.derangement(H, g)
        assert sorted(perm.tolist()) == list(range(H))
        assert (perm != torch.arange(H)).all()


# ----------------------------------------------------------------------------
# Real MiniLM weights.


@pytest.fixture(scope="module")
def captured(minilm, tokenizer):
    """MiniLM (the session's model, never modified here) and the E5 sites of the
    first two corpus sentences."""
    corpus = {"mode": "sentences", "batch_size": 2, "max_sequences": 2}
    return minilm, heads.captured_sequences(minilm, tokenizer, corpus, 2)


def test_captured_sites_obey_the_decomposition(captured):
    """o = sum_h z_h W_O^h + b_O on captured sites, and ln1.in = x + o."""
    model, seqs = captured
    w = layer_weights(model.encoder.layer[2])
    for s in seqs:
        z = s["blocks.2.attn.z"].double()  # (n, H, d_k)
        o = torch.einsum("nhk,hkd->nd", z, w.W_O) + w.b_O
        assert heads._rel(o, s["blocks.2.attn.out"].double()) < 1e-6
        x_plus_o = s["blocks.2.in"] + s["blocks.2.attn.out"]
        assert torch.allclose(x_plus_o, s["blocks.2.ln1.in"], atol=1e-6)


def test_layer_pass_reproduces_the_model(captured):
    """BertLayer forward on captured, padded inputs gives the model's own z, o and
    layer output (the next layer's input)."""
    model, seqs = captured
    layer = model.encoder.layer[1]
    x, mask = heads.pad([s["blocks.1.in"] for s in seqs])
    out, z, o = heads.layer_pass(layer, x, mask)
    for b, s in enumerate(seqs):
        n = s["blocks.1.in"].shape[0]
        assert torch.allclose(z[b, :n], s["blocks.1.attn.z"], atol=1e-5)
        assert torch.allclose(o[b, :n], s["blocks.1.attn.out"], atol=1e-5)
        assert torch.allclose(out[b, :n], s["blocks.2.in"], atol=1e-5)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_symmetries_leave_the_layer_unchanged(captured, dtype, tol):
    """Permuted heads and a per-head gauge (cond 10): same output, z moved as
    predicted: z'_h = z_perm(h) and z'_h = z_h G_h (value bias included)."""
    model, seqs = captured
    layer = copy.deepcopy(model.encoder.layer[3]).to(dtype)
    x, mask = heads.pad([s["blocks.3.in"].to(dtype) for s in seqs])
    out, z, _ = heads.layer_pass(layer, x, mask)
    H, d_k = z.shape[-2:]
    g = torch.Generator().manual_seed(3)

    perm = heads.derangement(H, g)
    out_p, z_p, _ = heads.layer_pass(heads.permuted_layer(layer, perm), x, mask)
    assert heads._masked_rel(out_p, out, mask) < tol
    assert heads._masked_rel(z_p, z[:, :, perm], mask) < tol

    G = torch.stack([heads.random_gauge(d_k, 10.0, g) for _ in range(H)])
    out_g, z_g, _ = heads.layer_pass(heads.gauged_layer(layer, G), x, mask)
    assert heads._masked_rel(out_g, out, mask) < 10 * tol
    z_pred = torch.einsum("bnhk,hkj->bnhj", z.double(), G)
    assert heads._masked_rel(z_g, z_pred, mask) < 10 * tol
    assert heads._head_moved(z_g, z, mask).min() > 0.1


def test_mlp_cannot_tell_decompositions_apart(captured):
    """On layer 0 in float64: every decomposition of the same o gives the same MLP
    output to round-off; the control, which changes o, changes it."""
    model, seqs = captured
    layer = copy.deepcopy(model.encoder.layer[0]).to(torch.float64)
    x, mask = heads.pad([s["blocks.0.in"].double() for s in seqs])
    tf = heads.draw_transforms(12, 32, CFG, torch.Generator().manual_seed(0))
    ref = heads.layer_pass(layer, x, mask)
    rows = pd.DataFrame(heads.mlp_checks(layer, x, mask, ref, tf))
    diff = rows[rows.metric == "mlp_rel_diff"].set_index(["decomposition", "cond"])
    same = diff.drop(index="control", level=0)["value"]
    bound = 1000 * same.index.get_level_values("cond") * np.finfo(float).eps
    assert (same.to_numpy() <= bound).all()
    assert diff.loc["control", "value"].min() > 1e-2


def test_reading_a_and_recovery_on_minilm(captured):
    """Every next-layer W_V reader of MiniLM (H = 12, d_k = 32) leaves
    n(H-1)d_k = 352 n directions; the full matrix agrees; reading B gives z back
    from o to float32 accuracy and not at all from x + o without x."""
    model, seqs = captured
    weights = [layer_weights(layer) for layer in model.encoder.layer]
    kernel, spectra = heads.reading_a(weights, "minilm", CFG, [1e-3])
    table = pd.read_csv(io.StringIO(heads.kernel_table(kernel).to_csv(index=False)))
    dec = table[table.decision]
    assert (dec.formula == dec.n * 11 * 32).all()
    assert (dec.kernel_dim_min == dec.formula).all()
    assert (dec.kernel_dim_max == dec.formula).all()
    assert (dec.full_checked == dec.full_agrees).all()
    assert set(dec.reader) == {"W_V", "random"}

    w_o, _ = heads.reading_b(weights, "minilm", CFG, [])
    rec = heads.recovery(weights, seqs, "minilm", CFG)
    readout = heads.reading_b_table(w_o, rec)
    assert (readout["decomposition_err"] < 1e-6).all()
    assert (readout["recovery_err_from_o"] < 1e-2).all()
    assert (readout["recovery_err_x_unknown"] > 1).all()
    assert (readout["kernel_residual"] == 384).all()


# ----------------------------------------------------------------------------
# The verdict on hand-made tables.


def _tables(kernel_dim=352, full_agrees=2, sym_err=1e-15, mlp_err=1e-15, rec=1e-5):
    kernel = pd.DataFrame(
        {
            "model": "m",
            "layer": [0, 0],
            "reader": "W_V",
            "n": [1, 2],
            "rtol": 1e-5,
            "decision": True,
            "H": 12,
            "d_k": 32,
            "formula": [352, 704],
            "kernel_dim_min": [kernel_dim, 2 * kernel_dim],
            "kernel_dim_max": [kernel_dim, 2 * kernel_dim],
            "readers": 12,
            "full_checked": 2,
            "full_agrees": full_agrees,
        }
    )
    readout = pd.DataFrame(
        {
            "model": "m",
            "layer": [0],
            "cond": [1e3],
            "recovery_err_from_o": [rec],
            "recovery_err_x_unknown": [50.0],
        }
    )
    sym = pd.DataFrame(
        {
            "model": "m",
            "transform": ["permutation", "gauge"],
            "cond": [1.0, 1e6],
            "dtype": "float64",
            "out_rel_err": [sym_err, 1e-11],
            "z_moved_min": [1.0, 100.0],
        }
    )
    mlp = pd.DataFrame(
        {
            "model": "m",
            "decomposition": ["permutation", "gauge", "mixing", "control"],
            "cond": [1.0, 1e6, 1.0, 1.0],
            "dtype": "float64",
            "mlp_rel_diff": [mlp_err, 1e-11, 1e-15, 0.1],
            "z_moved_median": [1.0, 100.0, 1.0, 0.0],
        }
    )
    return kernel, readout, sym, mlp


def test_verdict_confirmed_when_no_reader_recovers_the_heads():
    """W_O singular (recovery error 0.5 > recover_tol): reading B agrees."""
    v = heads.verdict_c4(*_tables(rec=0.5), CFG)
    assert v.verdict == "confirmed"


def test_verdict_qualified_when_reading_b_recovers_the_heads():
    v = heads.verdict_c4(*_tables(), CFG)
    assert v.verdict == "qualified"
    assert "whole mixed output" in v.summary


def test_verdict_qualified_when_a_reader_is_blinder_than_the_count():
    v = heads.verdict_c4(*_tables(kernel_dim=360, rec=0.5), CFG)
    assert v.verdict == "qualified"
    assert "more than n(H-1)d_k" in v.summary


@pytest.mark.parametrize(
    "broken",
    [
        {"kernel_dim": 300},  # fewer free directions than the count
        {"full_agrees": 1},  # full SVD disagrees with the block count
        {"sym_err": 1e-6},  # permutation changes the float64 output
        {"mlp_err": 1e-6},  # the MLP sees the decomposition
    ],
)
def test_verdict_not_supported(broken):
    v = heads.verdict_c4(*_tables(**broken), CFG)
    assert v.verdict == "not supported"
