"""Capture against the library's own forward pass on the real MiniLM weights."""

import pytest
import torch

from rankcollapse import capture, corpus
from rankcollapse.models import layer_weights

SENTENCES = [
    "Rain again this afternoon.",
    "The kettle is already boiling, so fold the towels in thirds and wait.",
]


@pytest.fixture(scope="module")
def captured(minilm, tokenizer):
    seqs = corpus.tokenise(SENTENCES, tokenizer, {}, 512)
    ids, ib, mask = next(corpus.batches(seqs, 8))
    recs = capture.run_and_capture(minilm, ib, mask)
    with torch.no_grad():
        out = minilm(
            input_ids=ib,
            attention_mask=mask,
            output_hidden_states=True,
            output_attentions=True,
        )
    return seqs, ids, mask, recs, out


def test_padding_rows_are_dropped(captured):
    seqs, ids, mask, recs, _ = captured
    by_id = {s.seq_id: s.n for s in seqs}
    for seq_id, rec in zip(ids, recs, strict=True):
        n = by_id[seq_id]
        assert rec["blocks.0.in"].shape == (n, 384)
        assert rec["blocks.3.attn.z"].shape == (n, 12, 32)
        assert rec["blocks.3.attn.probs"].shape == (12, n, n)


def test_sites_match_library_hidden_states(captured):
    _, _, mask, recs, out = captured
    for b, rec in enumerate(recs):
        n = int(mask[b].sum())
        assert torch.equal(rec["embed.out"], out.hidden_states[0][b, :n])
        for l in range(6):
            assert torch.equal(rec[f"blocks.{l}.out"], out.hidden_states[l + 1][b, :n])
            assert torch.equal(
                rec[f"blocks.{l}.attn.probs"], out.attentions[l][b, :, :n, :n]
            )


def test_block_rebuilt_from_sites_reproduces_library(captured, minilm):
    """From the captured head outputs z: mixed = sum_h z_h W_O^h + b_O, then
    LN1(X + mixed), then LN2(LN1 + MLP), in float64: equal to the library's
    float32 hidden states to float32 round-off."""
    _, _, _, recs, _ = captured
    for l, layer in enumerate(minilm.encoder.layer):
        w = layer_weights(layer)
        for rec in recs:
            x = rec[f"blocks.{l}.in"].double()
            z = rec[f"blocks.{l}.attn.z"].double()  # (n, H, d_k)
            mixed = torch.einsum("nhk,hkd->nd", z, w.W_O) + w.b_O
            assert torch.allclose(
                mixed, rec[f"blocks.{l}.attn.out"].double(), atol=1e-5
            )
            ln = torch.nn.functional.layer_norm
            h1 = ln(x + mixed, (384,), w.gamma1, w.beta1, w.eps1)
            assert torch.allclose(h1, rec[f"blocks.{l}.ln1.out"].double(), atol=1e-4)
            mlp = rec[f"blocks.{l}.mlp.out"].double()
            h2 = ln(h1 + mlp, (384,), w.gamma2, w.beta2, w.eps2)
            assert torch.allclose(h2, rec[f"blocks.{l}.out"].double(), atol=1e-4)


def test_head_outputs_are_attention_times_values(captured, minilm):
    """z_h = A_h (X W_V^h + b_V^h) for every head, from the captured probs."""
    _, _, _, recs, _ = captured
    w = layer_weights(minilm.encoder.layer[2])
    rec = recs[0]
    x = rec["blocks.2.in"].double()
    a = rec["blocks.2.attn.probs"].double()  # (H, n, n)
    v = torch.einsum("nd,hdk->hnk", x, w.W_V) + w.b_V[:, None, :]
    z = torch.einsum("hij,hjk->ihk", a, v)
    assert torch.allclose(z, rec["blocks.2.attn.z"].double(), atol=1e-5)


def test_unknown_site_pattern_is_an_error(minilm):
    with pytest.raises(ValueError, match="no site matches"):
        capture.Capture(minilm, ["blocks.*.nothing"])


def test_site_vocabulary_is_complete(minilm):
    names = {row[0] for row in capture._hook_table(minilm)}
    assert names == set(capture.all_sites(6))
