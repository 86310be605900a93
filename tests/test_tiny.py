"""Tests of rankcollapse.tiny: encoder, Markov sequences, masking, training.

Worked by hand: with ``branching = 1`` every token has one successor, so a
sequence is fixed by its first token: ``x_{t+1} = succ(x_t)``. A fresh encoder
(weights of std 0.02) gives nearly uniform logits, so its held-out loss is close
to ``log V``.
"""

from __future__ import annotations

import math

import pytest
import torch

from rankcollapse import tiny


def test_build_encoder_shapes_and_seed():
    cfg = tiny.EncoderConfig(vocab_size=20, d=16, n_layers=2, n_heads=2, d_ff=48)
    a, b = tiny.build_encoder(cfg, 3), tiny.build_encoder(cfg, 3)
    layer = a.bert.encoder.layer[0]
    assert layer.intermediate.dense.weight.shape == (48, 16)
    assert a.config._attn_implementation == "eager"
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    c = tiny.build_encoder(cfg, 4)
    assert not torch.equal(
        a.bert.embeddings.word_embeddings.weight,
        c.bert.embeddings.word_embeddings.weight,
    )


def test_markov_single_successor_is_deterministic():
    x = tiny.markov_sequences(vocab=5, branching=1, length=7, count=50, seed=0)
    assert x.shape == (50, 7)
    succ = {}
    for row in x.tolist():
        for a, b in zip(row, row[1:], strict=False):
            assert succ.setdefault(a, b) == b
    # Same first token, same sequence.
    firsts = {}
    for row in x.tolist():
        assert firsts.setdefault(row[0], row) == row


def test_markov_transitions_stay_in_successor_sets():
    x = tiny.markov_sequences(vocab=8, branching=3, length=20, count=200, seed=1)
    seen = {}
    for row in x.tolist():
        for a, b in zip(row, row[1:], strict=False):
            seen.setdefault(a, set()).add(b)
    assert max(len(s) for s in seen.values()) <= 3
    assert torch.equal(x, tiny.markov_sequences(8, 3, 20, 200, seed=1))


def test_masking_rules():
    task = tiny.MaskedTokenTask.from_markov(
        10, 2, 12, 100, mask_prob=0.2, eval_fraction=0.2, seed=0
    )
    assert task.train_ids.shape == (80, 12) and task.eval_ids.shape == (20, 12)
    batch = task.sample(64, torch.Generator().manual_seed(0))
    ids, labels = batch["input_ids"], batch["labels"]
    masked = labels != tiny.IGNORE
    assert masked.any(dim=1).all()  # at least one per sequence
    assert not masked[:, 0].any() and not masked[:, -1].any()  # CLS, SEP kept
    assert (ids[masked] == task.MASK).all()
    assert (ids[:, 0] == task.CLS).all() and (ids[:, -1] == task.SEP).all()
    # The held-out batch is fixed.
    assert torch.equal(task.eval_batch()["labels"], task.eval_batch()["labels"])


def test_from_lines_reduces_the_vocabulary(tokenizer):
    tok = tokenizer
    lines = ["the cat sat on the mat .", "a dog sat on a log ."] * 4
    task = tiny.MaskedTokenTask.from_lines(lines, tok, 6, 0.3, 0.25, 0)
    types = {
        t for line in lines for t in tok(line, add_special_tokens=False)["input_ids"]
    }
    assert task.vocab_size == len(types) + 5
    ids = torch.cat([task.train_ids, task.eval_ids])
    assert ids.max() < task.vocab_size and ids[:, 1:-1].min() >= 5


def test_training_learns_a_deterministic_chain():
    task = tiny.MaskedTokenTask.from_markov(8, 1, 10, 400, 0.3, 0.1, seed=0)
    model = tiny.build_encoder(
        tiny.EncoderConfig(
            vocab_size=task.vocab_size, d=32, n_heads=2, d_ff=64, max_positions=10
        ),
        seed=0,
    )
    start = tiny.evaluate(model, task, "cpu")
    assert start["loss"] == pytest.approx(math.log(task.vocab_size), abs=0.3)

    hist = tiny.train(
        model,
        task,
        tiny.TrainConfig(steps=60, lr=5e-3, eval_every=30),
        seed=0,
        device="cpu",
    )
    assert (hist.split == "train").sum() == 60
    evals = hist[(hist.split == "eval") & (hist.metric == "accuracy")]
    assert evals["step"].tolist() == [0, 30, 60]
    end = tiny.evaluate(model, task, "cpu")
    assert end["loss"] < start["loss"] - 0.5
    assert end["accuracy"] > 0.3
