"""Tests of rankcollapse.entropy: attention entropy, sigma-reparametrisation and
the small encoder of the entropy-collapse run."""

import math

import pandas as pd
import pytest
import torch

from rankcollapse import corpus, entropy

torch.set_num_threads(1)


def test_entropy_by_hand():
    """Uniform over 4 keys: log 4 nats, normalised 1. One-hot: 0. Half on each of two
    of 4 keys: log 2 nats, normalised log 2 / log 4 = 1/2. The mean is over queries."""
    probs = torch.tensor(
        [[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]],
        dtype=torch.float64,
    )
    h, h_norm = entropy.attention_entropy(probs.unsqueeze(1))  # 3 heads, 1 query
    assert h.tolist() == pytest.approx([math.log(4), 0.0, math.log(2)])
    assert h_norm.tolist() == pytest.approx([1.0, 0.0, 0.5])
    h, _ = entropy.attention_entropy(probs)  # one head, 3 queries
    assert float(h) == pytest.approx((math.log(4) + math.log(2)) / 3)


def test_model_entropy_matches_transformers_attentions(minilm, tokenizer):
    """The entropy read at the site blocks.{l}.attn.probs equals the one computed
    from transformers' own output_attentions, on the real MiniLM weights."""
    model = minilm
    lines = corpus.read_lines()[:3]
    seqs = corpus.tokenise(lines, tokenizer, {"mode": "sentences"}, 512)
    df = entropy.model_entropy(model, seqs, batch_size=3, pad_id=tokenizer.pad_token_id)

    s = seqs[1]
    with torch.no_grad():
        att = model(
            input_ids=torch.tensor([s.input_ids]), output_attentions=True
        ).attentions
    for layer in (0, 5):
        ref = (
            -(att[layer][0].double() * att[layer][0].double().clamp_min(1e-300).log())
            .sum(-1)
            .mean(-1)
        )
        got = (
            df[(df.seq == 1) & (df.layer == layer) & (df.metric == "entropy")]
            .sort_values("head")
            .value.to_numpy()
        )
        assert got == pytest.approx(ref.numpy(), rel=1e-5)
    norm = df[df.metric == "entropy_norm"].value
    assert norm.between(0, 1 + 1e-9).all()
    assert set(df.n[df.seq == 1]) == {s.n}  # padding dropped


def test_power_iteration_by_hand():
    """W = diag(3, 2, 1): sigma_max is 3 with u = v = e_1."""
    w = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    u, v = entropy.power_iteration(
        w, torch.ones(3, dtype=torch.float64) / 3**0.5, steps=60
    )
    assert float(u @ w @ v) == pytest.approx(3.0)
    assert abs(float(u[0])) == pytest.approx(1.0)


def test_sigma_reparam_linear():
    torch.manual_seed(0)
    lin = entropy.SigmaReparamLinear(24, 16, init_std=0.1)

    # gamma starts at sigma_max(W): the layer is the plain linear layer it replaces.
    w_hat = lin.effective_weight(update=False)
    assert torch.allclose(w_hat, lin.weight, rtol=1e-4, atol=1e-6)
    assert float(lin.gamma.detach()) == pytest.approx(
        float(torch.linalg.matrix_norm(lin.weight.detach(), ord=2)), rel=1e-5
    )

    # sigma_max(W_hat) = gamma, and W_hat does not see the scale of W.
    with torch.no_grad():
        lin.gamma.fill_(2.5)
        lin.weight.mul_(7.0)
    w_hat = lin.effective_weight(update=False)
    assert float(torch.linalg.matrix_norm(w_hat.detach(), ord=2)) == pytest.approx(
        2.5, rel=1e-4
    )

    # Gradients reach W and gamma.
    lin(torch.randn(5, 24)).sum().backward()
    assert lin.weight.grad is not None and lin.gamma.grad is not None


def test_tiny_encoder_and_qk_scale():
    cfg = entropy.TinyEncoderConfig(
        vocab=8, n=6, d=16, n_heads=2, n_layers=2, d_ff=32, sigma_reparam=True
    )
    model = entropy.TinyEncoder(cfg)
    logits, probs = model(torch.randint(0, 8, (3, 6)))
    assert logits.shape == (3, 6, 8) and probs.shape == (3, 2, 2, 6, 6)
    assert torch.allclose(probs.sum(-1), torch.ones(3, 2, 2, 6))

    # qk_scale by hand: W_Q^h = W_K^h = [I; 0] (d x d_k) gives W_Q^h W_K^h^T with
    # sigma_max 1, so the scale is 1 / sqrt(d_k) = 1 / sqrt(8).
    plain = entropy.Block(entropy.TinyEncoderConfig(d=16, n_heads=2))
    with torch.no_grad():
        eye = torch.eye(16)
        plain.query.weight.copy_(eye)
        plain.key.weight.copy_(eye)
    assert entropy.qk_scale(plain).tolist() == pytest.approx([8**-0.5] * 2)


def test_previous_token_task():
    cfg = entropy.TinyEncoderConfig(vocab=5, n=7)
    ids, target = entropy.previous_token_batch(4, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(target[:, 1:], ids[:, :-1])
    assert torch.equal(target[:, 0], ids[:, -1])


def test_training_run_and_summary():
    cfg = entropy.TinyEncoderConfig(vocab=6, n=8, d=16, n_heads=2, n_layers=1, d_ff=16)
    df = entropy.train_entropy_run(
        cfg, lr=1e-2, steps=4, batch=4, seed=0, log_every=2, collapse_entropy=0.1
    )
    assert sorted(set(df.step)) == [0, 2, 4]
    first = df[df.step == 0].set_index("metric").value
    assert first["entropy_norm_mean"] == pytest.approx(1.0, abs=1e-2)  # near uniform
    assert first["loss"] == pytest.approx(math.log(6), abs=0.02)
    assert {"entropy_norm.l0h0", "entropy_norm.l0h1", "qk_scale_max"} <= set(df.metric)

    # The summary's rule on hand-made logs: arm a's lowest layer ends at 0.05 and
    # 0.08 (median 0.065 < 0.1, collapsed); arm b's at 0.3 and 0.02 (median 0.16).
    rows = []
    for arm, finals in (("a", (0.05, 0.08)), ("b", (0.3, 0.02))):
        for seed, value in enumerate(finals):
            rows += [
                (arm, seed, 0, "entropy_norm_min_layer", 1.0),
                (arm, seed, 10, "entropy_norm_min_layer", value),
                (arm, seed, 10, "loss", 0.5),
            ]
    log = pd.DataFrame(rows, columns=["arm", "seed", "step", "metric", "value"])
    s = entropy.training_summary(log, 0.1).set_index("arm")
    assert bool(s.loc["a", "collapsed"]) and not bool(s.loc["b", "collapsed"])
    assert s.loc["b", "entropy_norm_min_layer"] == pytest.approx(0.16)
