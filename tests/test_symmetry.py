"""Tests of rankcollapse.symmetry: group actions and mechanisms on the real MiniLM
layer (transformers' own BertLayer, float64), and the table and verdict logic."""

import copy

import pandas as pd
import pytest
import torch
from transformers.models.bert.modeling_bert import eager_attention_forward

from rankcollapse import corpus, models, symmetry
from rankcollapse.capture import run_and_capture

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def layer_input(minilm, tokenizer):
    """MiniLM, and the real input of its layer 2 for one short corpus sentence."""
    lines = corpus.read_lines()[:1]
    seq = corpus.tokenise(lines, tokenizer, {"mode": "sentences"}, 512)[0]
    ids = torch.tensor([seq.input_ids])
    x = run_and_capture(minilm, ids, torch.ones_like(ids), "blocks.2.in")[0]
    return minilm, x["blocks.2.in"]


def layer64(model, index=2):
    return copy.deepcopy(model.encoder.layer[index]).double().eval()


def rel(a, b):
    return float((a - b).norm() / b.norm())


def test_random_elements():
    gen = torch.Generator().manual_seed(0)
    g = symmetry.random_invertible(5, 10.0, 3, gen)
    s = torch.linalg.svdvals(g)
    assert g.shape == (3, 5, 5)
    assert (s[:, 0] / s[:, -1]).tolist() == pytest.approx([10.0] * 3)
    for n in (2, 3, 10):
        perm = symmetry.random_permutation(n, gen)
        assert sorted(perm.tolist()) == list(range(n))
        assert perm.tolist() != list(range(n))
    with pytest.raises(ValueError):
        symmetry.random_permutation(1, gen)


def test_group_actions_keep_the_real_layer(layer_input):
    """Each weight symmetry leaves transformers' float64 layer output unchanged."""
    model, x = layer_input
    x = x.double().unsqueeze(0)
    base = layer64(model)
    gen = torch.Generator().manual_seed(3)
    H, d_k = 12, 32
    with torch.no_grad():
        y = base(x)
        for act, element in (
            (symmetry.permute_heads, symmetry.random_permutation(H, gen)),
            (symmetry.vo_gauge, symmetry.random_invertible(d_k, 10.0, H, gen)),
            (symmetry.qk_gauge, symmetry.random_invertible(d_k, 10.0, H, gen)),
            (
                symmetry.value_shift,
                torch.randn(H, d_k, generator=gen, dtype=torch.float64),
            ),
        ):
            moved = copy.deepcopy(base)
            act(moved, element)
            assert rel(moved(x), y) < 1e-12, act.__name__
            assert any(
                not torch.equal(p, q)
                for p, q in zip(moved.parameters(), base.parameters(), strict=True)
            )


def test_qk_gauge_keeps_every_score(layer_input):
    """(x W_Q^h M + b_Q^h M)(x W_K^h M^-T + b_K^h M^-T)^T = q k^T for every head."""
    model, x = layer_input
    x = x.double()
    base = layer64(model)
    moved = copy.deepcopy(base)
    symmetry.qk_gauge(
        moved,
        symmetry.random_invertible(32, 10.0, 12, torch.Generator().manual_seed(1)),
    )
    scores = []
    for layer in (base, moved):
        w = models.layer_weights(layer)
        q = torch.einsum("nd,hdk->hnk", x, w.W_Q) + w.b_Q[:, None]
        k = torch.einsum("nd,hdk->hnk", x, w.W_K) + w.b_K[:, None]
        scores.append(q @ k.transpose(1, 2))  # (H, n, n)
    assert rel(scores[1], scores[0]) < 1e-12
    assert rel(models.layer_weights(moved).W_Q, models.layer_weights(base).W_Q) > 0.1


def test_centred_attention_by_hand():
    """(A - 1 1^T / n) V = A V - 1 vbar^T: the head output loses the value mean, and
    the centred rows sum to 0."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(1, 2, 5, 3, generator=gen, dtype=torch.float64) for _ in range(3)
    )
    module = torch.nn.Module().eval()
    out_e, _ = eager_attention_forward(module, q, k, v, None)
    out_c, attn_c = symmetry.centred_attention_forward(module, q, k, v, None)
    assert torch.allclose(
        attn_c.sum(-1), torch.zeros(1, 2, 5, dtype=torch.float64), atol=1e-15
    )
    vbar = v.mean(dim=2, keepdim=True).transpose(1, 2)  # (1, 1, H, d_k)
    assert torch.allclose(out_c, out_e - vbar, atol=1e-14)


def test_neutral_mechanisms_equal_vanilla(layer_input):
    """Gates with w = c = 0 are all 1 (PG-OP at initialisation) and sigma-reparam
    with gamma = sigma_max(W) is W itself: both give the vanilla layer."""
    model, x = layer_input
    x = x.double()
    base = layer64(model)
    att = base.attention.self
    n, d = x.shape
    params = symmetry.MechanismParams(
        positions=model.embeddings.position_embeddings.weight.detach().double(),
        gate_w=torch.zeros(12, d, dtype=torch.float64),
        gate_c=torch.zeros(12, dtype=torch.float64),
        gamma_q=float(torch.linalg.matrix_norm(att.query.weight.detach(), ord=2)),
        gamma_k=float(torch.linalg.matrix_norm(att.key.weight.detach(), ord=2)),
    )
    with torch.no_grad():
        y = base(x.unsqueeze(0))
        for name in ("pgop", "sigma_reparam"):
            with symmetry.mechanism(base, name, params, n) as inp:
                assert rel(base(inp(x).unsqueeze(0)), y) < 1e-13, name
        # Leaving the context restores the vanilla layer.
        assert rel(base(x.unsqueeze(0)), y) == 0.0


def test_layer_checks_on_real_weights(layer_input):
    """The vanilla layer keeps all five symmetries to round-off; each row's
    mechanism breaks its own; PG-OP keeps the per-head value gauge."""
    model, x = layer_input
    df = symmetry.layer_checks(
        model.encoder.layer[2],
        [x],
        model.embeddings.position_embeddings.weight.detach(),
        symmetry.CheckConfig(),
        layer_index=2,
    )
    cell = df.set_index(["mechanism", "symmetry"]).value
    assert (cell["vanilla"] < 1e-12).all()
    for row in symmetry.ROWS:
        assert cell[(row.mechanism, row.symmetry)] > 1e-3, row.phenomenon
    assert cell[("pgop", "vo_gauge")] < 1e-12
    assert cell[("centred", "tokens")] < 1e-12  # 1 1^T / n commutes with P


# ----------------------------------------------------------------------------
# Tables and verdict on hand-made checks.


def fake_checks(model, broken=(), mixed=()):
    """Checks of one layer and sequence: 1e-15 everywhere, 0.1 where broken; a
    mixed cell has a second sequence at 1e-15."""
    rows = []
    for mech in symmetry.MECHANISMS:
        for sym in symmetry.SYMMETRIES:
            big = (mech, sym) in broken or (mech, sym) in mixed
            rows.append((model, 0, 0, mech, sym, 0.1 if big else 1e-15))
            if (mech, sym) in mixed:
                rows.append((model, 0, 1, mech, sym, 1e-15))
    return pd.DataFrame(
        rows, columns=["model", "layer", "seq", "mechanism", "symmetry", "value"]
    )


DIAGONAL = {(r.mechanism, r.symmetry) for r in symmetry.ROWS}
PGOP = {("pgop", "tokens"), ("pgop", "value_shift")}


def tables(checks):
    cross = symmetry.cross_table(checks, 1e-9, 1e-6)
    return symmetry.symmetry_table(cross), cross


WIDTH_OK = pd.DataFrame(
    {
        "model": "m",
        "weight_init": "init",
        "logits": "bilinear",
        "mixing": ["softmax", "centred"],
        "ratio_at_n_min": [0.4, 0.7],
        "ratio_at_n_max": [0.1, 0.9],
    }
)
ENTROPY_OK = pd.DataFrame(
    {"arm": ["vanilla", "sigma_reparam"], "collapsed": [True, False]}
)
CFG = {"width_gap_ratio": 0.5, "vanilla_arm": "vanilla", "remedy_arm": "sigma_reparam"}


def test_classify():
    assert symmetry.classify(1e-15, 1e-16, 1e-9, 1e-6) == "kept"
    assert symmetry.classify(0.2, 1e-3, 1e-9, 1e-6) == "broken"
    assert symmetry.classify(0.2, 1e-15, 1e-9, 1e-6) == "mixed"


def test_verdict_confirmed():
    table, cross = tables(fake_checks("m", DIAGONAL | PGOP))
    assert table.vanilla_has_symmetry.all() and table.mechanism_breaks_it.all()
    assert symmetry.distinct_patterns(cross) == {"m": True}
    v = symmetry.verdict_c6(table, cross, WIDTH_OK, ENTROPY_OK, CFG)
    assert v.verdict == "confirmed"


def test_verdict_qualified_when_a_consequence_fails():
    table, cross = tables(fake_checks("m", DIAGONAL))
    no_collapse = ENTROPY_OK.assign(collapsed=[False, False])
    v = symmetry.verdict_c6(table, cross, WIDTH_OK, no_collapse, CFG)
    assert v.verdict == "qualified" and "entropy" in v.summary

    closed = WIDTH_OK.assign(ratio_at_n_max=[0.6, 0.9])  # no gap at the largest n
    v = symmetry.verdict_c6(table, cross, closed, ENTROPY_OK, CFG)
    assert v.verdict == "qualified" and "width" in v.summary


def test_verdict_qualified_when_one_model_fails():
    good = fake_checks("a", DIAGONAL)
    bad = fake_checks(
        "b",
        DIAGONAL - {("sigma_reparam", "qk_gauge")},
        mixed={("sigma_reparam", "qk_gauge")},
    )
    table, cross = tables(pd.concat([good, bad]))
    assert not table.set_index(["model", "phenomenon"]).loc[
        ("b", "entropy collapse"), "mechanism_breaks_it"
    ]
    width = pd.concat([WIDTH_OK, WIDTH_OK.assign(model="b")])
    v = symmetry.verdict_c6(table, cross, width, ENTROPY_OK, CFG)
    assert v.verdict == "qualified" and "b" in v.summary
    assert "b: entropy collapse" in v.evidence["failing_rows"]


def test_verdict_not_supported():
    # The vanilla layer loses a symmetry: that row fails on the only model.
    table, cross = tables(fake_checks("m", DIAGONAL | {("vanilla", "heads")}))
    v = symmetry.verdict_c6(table, cross, WIDTH_OK, ENTROPY_OK, CFG)
    assert v.verdict == "not supported"

    # One mechanism breaks two rows' symmetries and nothing else tells them apart.
    same = {
        ("pgop", "tokens"),
        ("pgop", "heads"),
        ("positions", "tokens"),
        ("positions", "heads"),
        ("centred", "value_shift"),
        ("sigma_reparam", "qk_gauge"),
    }
    table, cross = tables(fake_checks("m", same))
    assert symmetry.distinct_patterns(cross) == {"m": False}
    v = symmetry.verdict_c6(table, cross, WIDTH_OK, ENTROPY_OK, CFG)
    assert v.verdict == "not supported"
