"""Tests of rankcollapse.pgop: PG-OP equals the original at initialisation, trains,
counts H (d + 1) parameters per layer, saves and reloads with transformers, reverts,
follows the model's positions, breaks the head permutation and keeps the gauge."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    BertConfig,
    BertForSequenceClassification,
    RobertaConfig,
    RobertaModel,
)

from rankcollapse import corpus, models, pgop


@pytest.fixture(scope="module")
def minilm_batch(tokenizer):
    """The first four corpus sentences, tokenised for MiniLM, as one padded batch."""
    seqs = corpus.tokenise(corpus.read_lines()[:4], tokenizer, {}, 512)
    _, ids, mask = next(corpus.batches(seqs, 4, tokenizer.pad_token_id))
    return ids, mask


def random_bert(seed=0, **kw):
    """A random 2-layer BERT, d = 32, H = 4 (d_k = 8), eager attention."""
    cfg = BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=24,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **kw,
    )
    torch.manual_seed(seed)
    return AutoModel.from_config(cfg, attn_implementation="eager").eval()


def tiny_batch(seed=0, B=3, n=10):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (B, n), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, n - 3 :] = 0  # one padded sequence
    return ids, mask


# ----------------------------------------------------------------------------
# The gate.


def test_sinusoidal_table_worked_case():
    """Position 0 is [sin 0, cos 0, ...] = [0, 1, 0, 1]; position 1 at d = 4 is
    [sin 1, cos 1, sin 0.01, cos 0.01] (frequencies 1 and 10000^(-2/4) = 0.01)."""
    t = pgop.sinusoidal_table(torch.tensor([0, 1]), 4)
    assert torch.equal(t[0], torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64))
    expect = torch.tensor([1.0, 1.0, 0.01, 0.01], dtype=torch.float64)
    assert torch.allclose(
        t[1],
        torch.stack(
            [expect[0].sin(), expect[1].cos(), expect[2].sin(), expect[3].cos()]
        ),
    )


@pytest.mark.parametrize("form", sorted(pgop.GATE_FORMS))
def test_gate_is_exactly_one_at_init(form):
    gate = pgop.PositionGate(n_heads=3, d_pos=5, form=form)
    g = gate(torch.randn(2, 7, 5))
    assert g.shape == (2, 7, 3)
    assert torch.equal(g, torch.ones_like(g))
    assert sum(p.numel() for p in gate.parameters()) == 3 * (5 + 1)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="gate_form"):
        pgop.PGOPConfig(gate_form="relu")
    with pytest.raises(ValueError, match="gate_input"):
        pgop.PGOPConfig(gate_input="rotary")


# ----------------------------------------------------------------------------
# Equality at initialisation, gradients, parameter count: real MiniLM weights.


def test_equal_to_minilm_at_init_bitwise(minilm_path, minilm_batch):
    """Every hidden state of converted MiniLM equals transformers' own forward."""
    ids, mask = minilm_batch
    model = models.load_model(minilm_path, "cpu")
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        pgop.convert(model)
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    for a, b in zip(ref.hidden_states, out.hidden_states, strict=True):
        assert torch.equal(a, b)
    assert isinstance(
        model.encoder.layer[0].attention.output.dense, pgop.PositionGatedOutput
    )


def test_gradients_reach_every_gate(minilm_path, minilm_batch):
    ids, mask = minilm_batch
    model = pgop.convert(models.load_model(minilm_path, "cpu"))
    out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    (out[mask.bool()] ** 2).mean().backward()
    for m in pgop.pgop_modules(model):
        assert m.gate.w.grad is not None and m.gate.w.grad.abs().sum() > 0
        assert m.gate.c.grad.abs().sum() > 0


def test_parameter_count_minilm(minilm_path):
    """MiniLM: L = 6, H = 12, d = 384: 6 * 12 * 385 = 27720 gate parameters,
    H / d = 1 / d_k = 1/32 of W_O's d (d + 1) per layer."""
    model = models.load_model(minilm_path, "cpu")
    before = sum(p.numel() for p in model.parameters())
    pgop.convert(model)
    assert sum(p.numel() for p in model.parameters()) - before == 27720
    m = pgop.pgop_modules(model)[0]
    gate = sum(p.numel() for p in m.gate.parameters())
    w_o = m.weight.numel() + m.bias.numel()
    assert gate == 12 * 385 and w_o == 384 * 385
    assert gate / w_o == pytest.approx(12 / 384) == 1 / 32


def test_overhead_rows_from_instantiated_modules():
    """BERT (converted) and GPT-2 (a gate beside Conv1D c_proj): H (d + 1) over
    d (d + 1); d = 64, H = 4 gives 260 / 4160 = 1/16."""
    configs = {
        "bert": AutoConfig.for_model(
            "bert",
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
        ),
        "gpt2": AutoConfig.for_model("gpt2", n_embd=64, n_layer=2, n_head=4),
    }
    table = pgop.overhead_table(configs).set_index("model")
    for name in configs:
        row = table.loc[name]
        assert row["gate_params_per_layer"] == row["formula_gate_per_layer"] == 260
        assert row["W_O_params_per_layer"] == row["formula_W_O_per_layer"] == 4160
        assert row["overhead"] == row["formula_overhead"] == 1 / 16
    assert table.loc["bert", "converted"] and not table.loc["gpt2", "converted"]


# ----------------------------------------------------------------------------
# Save, reload, revert.


def test_save_and_reload_with_transformers(tmp_path):
    """Gates survive save_pretrained / pgop.from_pretrained; plain from_pretrained
    loads the vanilla model and drops them."""
    model = pgop.convert(random_bert())
    pgop.draw_gates(model, logit_std=0.5, seed=1)
    ids, mask = tiny_batch()
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).last_hidden_state
    model.save_pretrained(tmp_path)

    again = pgop.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert again.config.pgop == {
        "gate_input": "position_embedding",
        "gate_form": "2sigmoid",
        "sinusoid_base": 10000.0,
    }
    with torch.no_grad():
        out = again(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(out, ref)

    plain = AutoModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert not pgop.is_converted(plain)
    with torch.no_grad():
        out = plain(input_ids=ids, attention_mask=mask).last_hidden_state
    assert not torch.allclose(out, ref)


def test_reload_a_model_with_a_head(tmp_path):
    """Keys carry the base-model prefix (bert.encoder...) in a head model."""
    torch.manual_seed(0)
    cfg = random_bert().config
    model = BertForSequenceClassification(cfg).eval()
    pgop.convert(model)
    pgop.draw_gates(model, logit_std=0.5, seed=2)
    ids, mask = tiny_batch()
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
    model.save_pretrained(tmp_path)
    again = pgop.from_pretrained(tmp_path, BertForSequenceClassification).eval()
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids, attention_mask=mask).logits, ref)


def test_revert_restores_the_original_module_and_keys():
    model = random_bert()
    keys = set(model.state_dict())
    w_o = model.encoder.layer[0].attention.output.dense.weight
    pgop.convert(model)
    assert set(model.state_dict()) - keys == {
        f"encoder.layer.{i}.attention.output.dense.gate.{p}"
        for i in range(2)
        for p in "wc"
    }
    pgop.revert(model)
    dense = model.encoder.layer[0].attention.output.dense
    assert type(dense) is nn.Linear and dense.weight is w_o
    assert set(model.state_dict()) == keys and not hasattr(model.config, "pgop")
    with pytest.raises(ValueError, match="already"):
        pgop.convert(pgop.convert(model))


# ----------------------------------------------------------------------------
# Positions.


def test_gates_follow_position_ids_passed_by_the_caller():
    """Shifting the positions by 3 changes the output exactly as using the gate
    values of positions 3..n+2 does."""
    model = pgop.convert(random_bert())
    pgop.draw_gates(model, logit_std=1.0, seed=0)
    ids, mask = tiny_batch(n=8)
    shifted = torch.arange(3, 11).unsqueeze(0)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, position_ids=shifted)
    ctx = pgop.pgop_modules(model)[0].context
    assert torch.equal(ctx.position_ids, shifted)
    table = model.embeddings.position_embeddings.weight[3:11]
    assert torch.equal(ctx.p[0], table)


def test_roberta_padding_aware_positions_reach_the_gates():
    """RoBERTa numbers positions from padding_idx + 1 and skips padding tokens:
    the hook records those ids, not 0..n-1."""
    cfg = RobertaConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=30,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    model = pgop.convert(RobertaModel(cfg).eval())
    ids = torch.tensor([[0, 5, 6, 2, 1, 1]])  # two padding tokens at the end
    with torch.no_grad():
        model(input_ids=ids, attention_mask=(ids != 1).long())
    ctx = pgop.pgop_modules(model)[0].context
    assert ctx.position_ids.tolist() == [[2, 3, 4, 5, 1, 1]]


def test_sinusoidal_gate_input_and_stale_positions():
    model = pgop.convert(random_bert(), {"gate_input": "sinusoidal"})
    ids, mask = tiny_batch(n=6)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    m = pgop.pgop_modules(model)[0]
    p = m.context.gate_input(6, m.weight)
    assert torch.allclose(p[0].double(), pgop.sinusoidal_table(torch.arange(6), 32))
    with pytest.raises(RuntimeError, match="recorded 6 positions"):
        m(torch.zeros(1, 9, 32))  # a layer called on its own, another length


def test_context_without_a_hook_uses_positions_0_to_n_minus_1():
    ctx = pgop.PositionContext(pgop.PGOPConfig(), d_pos=4)
    p = ctx.gate_input(3, torch.zeros(1))
    assert torch.equal(p[0], pgop.sinusoidal_table(torch.arange(3), 4).float())


# ----------------------------------------------------------------------------
# Symmetries and identifiability.


def test_permutation_broken_gauge_kept_float64():
    model = random_bert().double()
    ids, mask = tiny_batch()
    perm = pgop.cyclic_permutation(4)

    def change(ctx_manager):
        with torch.no_grad():
            ref = model(input_ids=ids, attention_mask=mask).last_hidden_state
        with ctx_manager:
            return pgop.relative_change(model, ids, mask, ref)

    # Vanilla: both are symmetries.
    assert change(pgop.heads_permuted(model, perm)) < 1e-13
    assert change(pgop.heads_gauged(model, seed=0, cond=10.0)) < 1e-12

    # PG-OP with differing gates: permutation broken, gauge kept.
    pgop.convert(model)
    pgop.draw_gates(model, logit_std=0.5, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert change(pgop.heads_permuted(model, perm)) > 1e-3
    assert change(pgop.heads_permuted(model, perm, permute_gates=True)) < 1e-13
    assert change(pgop.heads_gauged(model, seed=0, cond=10.0)) < 1e-12
    for k, v in model.state_dict().items():  # restored exactly
        assert torch.equal(v, before[k])


def test_gate_rank_worked_cases():
    """Vanilla G = 1 1^T has rank 1; G = [[1, 2], [1, 2], [2, 1]] has rank 2."""
    assert pgop.gate_rank(torch.ones(5, 3))[0] == 1
    G = torch.tensor([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0]])
    rank, s = pgop.gate_rank(G, rtol=1e-6)
    assert rank == 2 and s.shape == (2,)


@settings(max_examples=25, deadline=None)
@given(
    H=st.integers(2, 4),
    dk=st.integers(1, 3),
    r=st.integers(1, 4),
    seed=st.integers(0, 10_000),
)
def test_reading_a_kernel_is_H_minus_rank_G_times_d_k(H, dk, r, seed):
    """For invertible W_O^h R, the kernel of reading A is (H - rank G) d_k."""
    r = min(r, H)
    gen = torch.Generator().manual_seed(seed)
    n, d = 6, H * dk
    G = torch.randn(n, r, generator=gen, dtype=torch.float64) @ torch.randn(
        r, H, generator=gen, dtype=torch.float64
    )
    W_O = torch.randn(H, dk, d, generator=gen, dtype=torch.float64)
    R = torch.randn(d, dk, generator=gen, dtype=torch.float64)
    B = pgop.reading_a_map(G, W_O, R)
    assert B.shape == (n * dk, H * dk)
    assert pgop.kernel_dim(B, rtol=1e-9) == (H - pgop.gate_rank(G, 1e-9)[0]) * dk


def test_vanilla_reading_a_has_H_minus_1_d_k_free_directions():
    H, dk = 3, 2
    W_O = torch.randn(H, dk, H * dk, dtype=torch.float64)
    R = torch.randn(H * dk, dk, dtype=torch.float64)
    B = pgop.reading_a_map(torch.ones(5, H, dtype=torch.float64), W_O, R)
    assert pgop.kernel_dim(B) == (H - 1) * dk


def test_model_checks_on_a_fetched_tiny_model(tmp_path):
    model = random_bert()
    model.save_pretrained(tmp_path)
    ids, mask = tiny_batch()
    out = pgop.model_checks(tmp_path, ids, mask, {}, 0.5, 10.0, 0)
    assert out["init_max_abs_diff"] == 0.0 and out["reload_max_abs_diff"] == 0.0
    assert out["params_added"] == out["params_added_formula"] == 2 * 4 * 33
    assert out["perm_rel_change_pgop"] > 1e-3
    assert (
        max(
            out["perm_rel_change_vanilla"],
            out["gauge_rel_change_vanilla"],
            out["gauge_rel_change_pgop"],
        )
        < 1e-12
    )


# ----------------------------------------------------------------------------
# Verdict.


DECISION = {
    "overhead_bound": 0.016,
    "init_tol": 0.0,
    "invariance_rtol": 1e-9,
    "broken_min": 1e-4,
    "noise_k": 2.0,
}


def tables(
    overhead=(0.015625, 64),
    init=0.0,
    perm_pgop=0.2,
    gauge_pgop=1e-15,
    ranks=(3, 2),
    decision="within noise",
):
    over = pd.DataFrame([{"model": "m", "overhead": overhead[0], "d_k": overhead[1]}])
    checks = pd.DataFrame(
        {
            "model": "m",
            "metric": [
                "init_max_abs_diff",
                "perm_rel_change_vanilla",
                "gauge_rel_change_vanilla",
                "perm_rel_change_pgop",
                "gauge_rel_change_pgop",
            ],
            "value": [init, 1e-15, 1e-15, perm_pgop, gauge_pgop],
        }
    )
    ident = pd.DataFrame(
        [
            {"task": "t", "seed": s, "arm": "pgop", "layer": 0, "rank_G": r}
            for s, r in enumerate(ranks)
        ]
    )
    summary = pd.DataFrame(
        [{"task": "t", "score": "eval_accuracy", "decision": decision}]
    )
    return over, checks, ident, summary


@pytest.mark.parametrize(
    "kw, outcome, phrase",
    [
        ({}, "confirmed", "below 1.60%"),
        ({"overhead": (0.03125, 32)}, "qualified", "d_k=32"),
        ({"decision": "pgop worse"}, "qualified", "worse than vanilla"),
        ({"ranks": (3, 1)}, "qualified", "stayed rank 1 in t seed 1"),
        ({"init": 1e-7}, "not supported", "initialisation"),
        ({"perm_pgop": 1e-6}, "not supported", "permutation"),
        ({"gauge_pgop": 1e-3}, "not supported", "gauge"),
        ({"ranks": (1, 1)}, "not supported", "rank above 1"),
    ],
)
def test_verdict_outcomes(kw, outcome, phrase):
    v = pgop.verdict_c5(*tables(**kw), DECISION)
    assert v.verdict == outcome and phrase in v.summary
