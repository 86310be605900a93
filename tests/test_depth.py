"""E1 variants against the library and against hand-worked stacks."""

import pandas as pd
import pytest
import torch

from rankcollapse import corpus, depth

SENTENCES = ["Where did you park?", "Close the back door, please, before the rain."]


@pytest.fixture(scope="module")
def batch(tokenizer):
    seqs = corpus.tokenise(SENTENCES, tokenizer, {}, 512)
    return next(corpus.batches(seqs, 8))


def test_full_variant_reproduces_library_hidden_states(minilm, batch):
    _, ids, mask = batch
    ours = depth.run_variant(minilm, ids, mask, "full")
    ref = depth.run_library(minilm, ids, mask)
    for b, n in enumerate(mask.sum(1).tolist()):
        assert torch.equal(ours[:, b, :n], ref[:, b, :n])


@pytest.mark.parametrize(
    "surgery,variant",
    [("san", "attn+ln"), ("san+mlp", "attn+mlp"), ("san+skip", "attn+res+ln")],
)
def test_dong_surgeries_equal_our_rewiring(minilm, batch, surgery, variant):
    _, ids, mask = batch
    ours = depth.run_variant(minilm, ids, mask, variant)
    theirs = depth.run_library(depth.dong_surgery(minilm, surgery), ids, mask)
    for b, n in enumerate(mask.sum(1).tolist()):
        assert torch.allclose(ours[:, b, :n], theirs[:, b, :n], atol=1e-6)


def test_surgery_leaves_the_model_untouched(minilm, batch):
    _, ids, mask = batch
    before = depth.run_library(minilm, ids, mask)
    depth.dong_surgery(minilm, "san")
    assert torch.equal(before, depth.run_library(minilm, ids, mask))


def test_attn_res_is_x_plus_mixed_output(tiny_bert):
    """attn+res after one layer is X0 + MHA(X0), MHA from the library's modules."""
    ids = torch.tensor([[1, 5, 7, 2]])
    mask = torch.ones_like(ids)
    states = depth.run_variant(tiny_bert, ids, mask, "attn+res")
    x0 = states[0]
    layer = tiny_bert.encoder.layer[0]
    with torch.no_grad():
        z, _ = layer.attention.self(x0, attention_mask=depth.additive_mask(mask))
        expect = x0 + layer.attention.output.dense(z)
    assert torch.allclose(states[1], expect)


def test_unknown_variant_is_named(tiny_bert):
    ids = torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match="attn\\+nothing"):
        depth.run_variant(tiny_bert, ids, torch.ones_like(ids), "attn+nothing")


def _last(rows):
    return pd.DataFrame(
        rows,
        columns=[
            "model",
            "init",
            "variant",
            "layer",
            "res_ratio_median",
            "affine_rank_median",
            "collapsed",
        ],
    )


def test_verdict_outcomes():
    """Hand-made last-layer tables give each of the three outcomes."""
    checks = pd.DataFrame({"max_abs_diff": [0.0]})
    held = [
        ("a", "p", "attn+res", 6, 0.3, 5, False),
        ("b", "r", "attn+res", 6, 0.4, 5, False),
        ("a", "p", "attn", 6, 1e-7, 0, True),
    ]
    assert depth.verdict_c2_depth(_last(held), checks, []).verdict == "confirmed"
    mixed = held[:1] + [("b", "r", "attn+res+ln", 6, 1e-5, 0, True)]
    v = depth.verdict_c2_depth(_last(mixed), checks, [])
    assert v.verdict == "qualified" and "b" in v.summary
    failed = [("a", "p", "attn+res", 6, 1e-5, 1, True)]
    assert depth.verdict_c2_depth(_last(failed), checks, []).verdict == "not supported"


def test_last_layer_flags_collapse_by_rule():
    """Ratio below the threshold or affine rank at most 1 counts as collapse."""
    rows = []
    for variant, ratio, arank in (
        ("attn", 1e-9, 3),
        ("attn+res", 0.5, 3),
        ("attn+ln", 0.5, 1),
    ):
        for layer, (r, a) in enumerate(((0.9, 3), (ratio, arank))):
            for metric, value in (
                ("res_ratio", r),
                ("affine_rank", a),
                ("res_ratio_fro", r),
                ("rank", 4),
                ("effective_rank", 2.0),
            ):
                rows.append(
                    {
                        "model": "m",
                        "init": "p",
                        "variant": variant,
                        "layer": layer,
                        "metric": metric,
                        "median": value,
                        "q25": value,
                        "q75": value,
                        "n_sequences": 1,
                    }
                )
    last = depth.last_layer(pd.DataFrame(rows), collapse_ratio=1e-3)
    flags = dict(zip(last.variant, last.collapsed, strict=True))
    assert flags == {"attn": True, "attn+res": False, "attn+ln": True}
    assert set(last.input_affine_rank_median) == {3}
