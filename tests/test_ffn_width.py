"""Tests of rankcollapse.ffn_width: task, measurements, summaries, verdict C7.

Worked by hand for ``run_summary``: two sequences, one layer; sequence 0 keeps
its affine rank (3 -> 3), sequence 1 loses one (3 -> 2), so
``affine_rank_kept`` = 1/2; with n = 4 the last-layer affine ranks over n - 1
are 1 and 2/3, median 5/6.
"""

from __future__ import annotations

import pandas as pd
import pytest

from rankcollapse import ffn_width as F
from rankcollapse import tiny

MODEL = dict(d=32, n_layers=2, n_heads=2, init_range=0.02, dropout=0.0)
TASK = dict(
    source="markov",
    vocab=12,
    branching=2,
    sequences=120,
    seq_len=8,
    mask_prob=0.25,
    eval_fraction=0.25,
    seed=0,
)


def test_fresh_encoder_attention_inside_mlp_outside():
    task = F.build_task(TASK)
    model = tiny.build_encoder(
        tiny.EncoderConfig(
            vocab_size=task.vocab_size, d=32, n_heads=2, d_ff=64, max_positions=8
        ),
        0,
    )
    m = F.measure(model.bert, task.eval_ids[:3], rtol=1e-10)
    e = m[m.metric == "energy_outside"]
    attn = e[(e.site == "attn_block") & (e.subspace == "affine")]["value"]
    mlp = e[(e.site == "mlp") & (e.subspace == "linear")]["value"]
    assert attn.max() < 1e-10 and mlp.min() > 1e-2
    ranks = m[m.metric == "affine_rank_in"]
    assert len(ranks) == 3 * 2 and (ranks["value"] == 7).all()  # n - 1


def test_run_and_summary_cover_both_phases():
    task = F.build_task(TASK)
    metrics, history = F.run(2, 0, MODEL, dict(steps=4, eval_every=2), task, 3, "cpu")
    assert set(metrics["phase"]) == {"init", "trained"}
    assert (history.split == "train").sum() == 4
    s = F.run_summary(metrics)
    assert set(s["quantity"]) == set(F.QUANTITIES)
    assert len(s) == 2 * len(F.QUANTITIES)
    assert (
        s.set_index(["phase", "quantity"]).loc[("trained", "affine_rank_kept"), "value"]
        == 1.0
    )


def test_run_refuses_sequences_beyond_the_bound():
    task = F.build_task({**TASK, "seq_len": 12})  # 12 * 3 + 2 = 38 >= 32
    with pytest.raises(ValueError, match="n\\(H\\+1\\)\\+2"):
        F.run(1, 0, MODEL, dict(steps=1), task, 2, "cpu")


def test_run_summary_by_hand():
    rows = []
    for seq, (r_in, r_out, eff) in enumerate([(3, 3, 2.0), (3, 2, 1.0)]):
        rows += [
            dict(seq=seq, layer=0, subspace=None, site=None, metric=k, value=v)
            for k, v in (
                ("affine_rank_in", r_in),
                ("affine_rank_out", r_out),
                ("effective_rank_out", eff),
            )
        ]
        rows += [
            dict(
                seq=seq,
                layer=0,
                subspace="input_span",
                site=None,
                metric="bound",
                value=4.0,
            )
        ]
        for site, v in (("attn_block", 1e-15), ("mlp", 0.2 + seq), ("layer", 0.1)):
            for sub in ("affine", "linear"):
                rows.append(
                    dict(
                        seq=seq,
                        layer=0,
                        subspace=sub,
                        site=site,
                        metric="energy_outside",
                        value=v,
                    )
                )
    rows += [
        dict(seq=None, layer=None, subspace=None, site=None, metric=k, value=v)
        for k, v in (("accuracy", 0.5), ("loss", 1.0))
    ]
    s = F.run_summary(pd.DataFrame(rows).assign(phase="trained")).set_index("quantity")[
        "value"
    ]
    assert s["affine_rank_kept"] == 0.5
    assert s["final_affine_rank"] == pytest.approx(5 / 6)
    assert s["final_effective_rank"] == pytest.approx(1.5)
    assert s["mlp_energy_outside"] == pytest.approx(0.7)
    assert s["accuracy"] == 0.5


# ----------------------------------------------------------------------------
# Verdict C7 on hand-made summaries.

CFG = dict(
    reference_multiple=4,
    noise_k=2.0,
    rank_quantity="affine_rank_kept",
    soft_quantities=["final_effective_rank", "mlp_energy_outside"],
    outside_min=1e-2,
)


def summaries(kept_narrow=1.0, kept_ref=1.0, eff_narrow=10.0, mlp_narrow=0.2):
    """Three seeds at 1d and 4d; seed spread 0.1 in effective rank."""
    rows = []
    for m in (1, 4):
        for seed, jitter in enumerate((-0.1, 0.0, 0.1)):
            vals = {
                "affine_rank_kept": kept_narrow if m == 1 else kept_ref,
                "final_effective_rank": (eff_narrow if m == 1 else 10.0) + jitter,
                "mlp_energy_outside": (mlp_narrow if m == 1 else 0.2) + jitter / 10,
                "accuracy": 0.5 + jitter,
            }
            rows += [
                dict(multiple=m, seed=seed, phase="trained", quantity=q, value=v)
                for q, v in vals.items()
            ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "kwargs, outcome",
    [
        (dict(), "confirmed"),
        (dict(eff_narrow=10.15), "confirmed"),  # higher is never worse
        (dict(eff_narrow=9.85), "confirmed"),  # within 2 x sd = 0.2
        (dict(eff_narrow=9.5), "qualified"),  # lower beyond seed noise
        (dict(kept_narrow=0.9, kept_ref=0.9), "qualified"),  # 4d loses rank too
        (dict(kept_narrow=0.9), "not supported"),  # only the narrow width loses rank
        (dict(mlp_narrow=0.001), "not supported"),  # the narrow MLP stays in T
    ],
)
def test_verdict_c7(kwargs, outcome):
    v = F.verdict_c7(summaries(**kwargs), CFG)
    assert v.verdict == outcome, v.summary
