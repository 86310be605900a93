"""Tests of rankcollapse.pgop_train: the tasks, attention entropy, one short run of
each arm, the scores and the seed-noise rule."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from rankcollapse import corpus, pgop_train

SCRATCH = {
    "d": 32,
    "n_heads": 2,
    "n_layers": 2,
    "d_ff": 32,
    "dropout": 0.0,
    "seq_len": 8,
    "vocab": 6,
    "offsets": [2, -2],
    "steps": 6,
    "batch_size": 8,
    "lr": 1e-3,
    "new_lr": None,
    "warmup": 2,
    "weight_decay": 0.0,
    "eval_size": 16,
    "data_seed": 0,
}
SENTENCES = {
    "max_tokens": 32,
    "min_words": 4,
    "test_fraction": 0.25,
    "data_seed": 0,
    "batch_size": 4,
    "eval_batch_size": 64,
    "freeze_word_embeddings": True,
    "steps": 2,
    "lr": 1e-4,
    "new_lr": 1e-3,
    "warmup": 1,
    "weight_decay": 0.0,
}


# ----------------------------------------------------------------------------
# Tasks.


def test_offset_copy_worked_case():
    """n = 4, offsets [1, -1]: positions 0, 1 read 1, 2; positions 2, 3 read 1, 2:
    [a, b, c, d] -> [b, c, b, c]."""
    task = pgop_train.OffsetCopyTask(
        dict(SCRATCH, seq_len=4, offsets=[1, -1], eval_size=2)
    )
    assert task.source.tolist() == [1, 2, 1, 2]
    batch = task.make(1, torch.Generator().manual_seed(0))
    x = batch.input_ids[0]
    assert batch.labels[0].tolist() == [x[1], x[2], x[1], x[2]]


def test_offset_copy_wraps_around():
    task = pgop_train.OffsetCopyTask(dict(SCRATCH, seq_len=6, offsets=[-1, 4]))
    assert task.source.tolist() == [5, 0, 1, 1, 2, 3]


def test_shuffled_is_a_different_order_of_the_same_words():
    import random

    words = "the cat sat on the mat".split()
    rng = random.Random(0)
    for _ in range(20):
        out = pgop_train.shuffled(words, rng)
        assert out != words and sorted(out) == sorted(words)


def test_word_order_task_splits_and_balances(minilm_path):
    task = pgop_train.WordOrderTask(SENTENCES, minilm_path, corpus.read_lines())
    train = {" ".join(w) for w in task.train}
    test = {" ".join(w) for w in task.test}
    assert train and test and not train & test
    assert all(w.isalnum() for s in task.train for w in s)  # no punctuation
    labels = torch.cat([b.labels for b in task.eval_set])
    assert labels.sum() * 2 == len(labels) == 2 * len(task.test)
    assert max(b.input_ids.shape[1] for b in task.eval_set) <= 32
    batch = task.train_batch(torch.Generator().manual_seed(0))
    assert batch.input_ids.shape[0] == 4


def test_sst2_reads_local_parquet(tmp_path, minilm_path):
    """The SST-2 code path with two hand-made parquet files in GLUE's layout."""
    df = pd.DataFrame(
        {
            "sentence": ["a fine film", "dull and long", "loved it"],
            "label": [1, 0, 1],
            "idx": [0, 1, 2],
        }
    )
    df.to_parquet(tmp_path / "train.parquet")
    df.to_parquet(tmp_path / "validation.parquet")
    train, val = pgop_train.read_sst2(
        tmp_path / "train.parquet", tmp_path / "validation.parquet"
    )
    task = pgop_train.SST2Task(dict(SENTENCES, max_eval=2), minilm_path, train, val)
    assert sum(len(b.labels) for b in task.eval_set) == 2
    assert task.train_batch(torch.Generator().manual_seed(0)).labels.shape == (4,)


# ----------------------------------------------------------------------------
# One run of each arm, from scratch.


@pytest.fixture(scope="module")
def runs():
    task = pgop_train.OffsetCopyTask(SCRATCH)
    return {
        arm: pgop_train.train_run(
            "offset_copy",
            task,
            arm,
            0,
            SCRATCH,
            {},
            "cpu",
            log_every=3,
            gate_positions=8,
            rank_rtol=1e-3,
        )
        for arm in pgop_train.ARMS
    }


def test_run_tables_have_the_documented_columns(runs):
    for arm, out in runs.items():
        assert list(out["log"].columns) == pgop_train.LOG_COLUMNS
        assert set(out["log"]["step"]) == {0, 3, 6}
        metrics = set(out["log"]["metric"])
        assert {
            "eval_loss",
            "eval_accuracy",
            "train_loss",
            "attn_entropy",
            "attn_entropy_norm",
            "attn_entropy_head",
            "perm_sensitivity",
        } <= metrics
        assert ("gate_rank" in metrics) == (arm == "pgop")
        assert list(out["gates"].columns) == pgop_train.GATE_COLUMNS
    assert runs["vanilla"]["gates"].empty
    assert len(runs["pgop"]["gates"]) == 3 * 2 * 2 * 8  # steps, layers, heads, n


def test_both_arms_start_identical_and_vanilla_keeps_permutation(runs):
    """Same seed: same weights and batches, gates at 1, so step 0 agrees exactly."""

    def at(arm, step):
        log = runs[arm]["log"]
        sel = log[(log.step == step) & (log.layer == -1)]
        return sel.set_index("metric")["value"]

    v0, p0 = at("vanilla", 0), at("pgop", 0)
    for metric in ("eval_loss", "eval_accuracy", "attn_entropy"):
        assert v0[metric] == p0[metric]
    assert at("vanilla", 6)["perm_sensitivity"] < 1e-5
    assert at("pgop", 6)["gate_std"] > 0


def test_identifiability_vanilla_and_trained_gates(runs):
    """Vanilla: rank G = 1 and the measured kernel is (H - 1) d_k = 16; trained
    PG-OP: the round-off-level kernel equals (H - rank G) d_k."""
    v = runs["vanilla"]["identifiability"]
    assert (v["rank_G"] == 1).all() and (v["free_dirs_vanilla"] == 16).all()
    assert v.loc[0, "kernel_min"] == v.loc[0, "kernel_max"] == 16
    assert math.isnan(v.loc[1, "kernel_min"])  # the last layer has no reader
    p = runs["pgop"]["identifiability"].iloc[0]
    assert p["kernel_exact_min"] == p["free_dirs_formula_exact"]


# ----------------------------------------------------------------------------
# Scores across seeds.


def hand_log():
    rows = []
    for arm, accs in {
        "vanilla": [[0.6, 0.8], [0.7, 0.9]],
        "pgop": [[0.7, 0.9], [0.8, 1.0]],
    }.items():
        for seed, (a1, a2) in enumerate(accs):
            for step, acc in ((0, 0.1), (10, a1), (20, a2)):
                rows.append(("t", arm, seed, step, "eval_accuracy", acc, -1, -1))
                rows.append(("t", arm, seed, step, "attn_entropy_head", 9.0, 0, 0))
    return pd.DataFrame(rows, columns=pgop_train.LOG_COLUMNS)


def test_run_scores_final_and_auc():
    scores = pgop_train.run_scores(hand_log(), ["eval_accuracy", "eval_accuracy_auc"])
    s = scores.set_index(["arm", "seed", "score"])["value"]
    assert s[("vanilla", 0, "eval_accuracy")] == 0.8
    assert s[("vanilla", 0, "eval_accuracy_auc")] == pytest.approx(0.7)  # no step 0
    assert s[("pgop", 1, "eval_accuracy")] == 1.0


def test_score_summary_worked_case():
    """Docstring case: vanilla [0.8, 0.9], PG-OP [0.9, 1.0]: gap 0.1, SE 0.0707."""
    scores = pgop_train.run_scores(hand_log(), ["eval_accuracy"])
    row = pgop_train.score_summary(scores, noise_k=2.0).iloc[0]
    assert row["gap"] == pytest.approx(0.1)
    assert row["se"] == pytest.approx(math.sqrt(0.005))
    assert row["decision"] == "within noise"
    assert row["paired_gap_mean"] == pytest.approx(0.1)
    row = pgop_train.score_summary(scores, noise_k=0.5).iloc[0]
    assert row["decision"] == "pgop better"


def test_score_summary_worse_and_too_few_seeds():
    scores = pd.DataFrame(
        {
            "task": "t",
            "score": "s",
            "arm": ["vanilla"] * 3 + ["pgop"] * 3,
            "seed": [0, 1, 2] * 2,
            "value": [0.9, 0.91, 0.92, 0.5, 0.52, 0.51],
        }
    )
    assert pgop_train.score_summary(scores, 2.0).iloc[0]["decision"] == "pgop worse"
    one = scores[scores.seed == 0]
    assert pgop_train.score_summary(one, 2.0).iloc[0]["decision"] == "too few seeds"
