"""The shipped corpus and the two tokenisation settings."""

import pytest

from rankcollapse import corpus


def test_shipped_corpus_spans_short_and_long(tokenizer):
    lines = corpus.read_lines()
    assert len(lines) >= 300 and len(set(lines)) == len(lines)
    seqs = corpus.tokenise(lines, tokenizer, {}, 512)
    lengths = [s.n for s in seqs]
    assert min(lengths) <= 8 and max(lengths) > 100


def test_too_long_names_the_line(tokenizer):
    lines = ["short one.", "a b c d e f g h i j k l"]
    with pytest.raises(corpus.CorpusError, match="corpus line 2"):
        corpus.tokenise(lines, tokenizer, {}, max_positions=8)
    seqs = corpus.tokenise(lines, tokenizer, {"too_long": "truncate"}, 8)
    assert seqs[1].n == 8 and seqs[1].input_ids[-1] == tokenizer.sep_token_id


def test_fixed_length_has_no_padding(tokenizer):
    """Dong's setting: every sequence has exactly the configured length."""
    cfg = {"mode": "fixed_length", "fixed_length": 16}
    seqs = corpus.tokenise(corpus.read_lines(), tokenizer, cfg, 512)
    assert len(seqs) > 100 and {s.n for s in seqs} == {16}
    _, ids, mask = next(corpus.batches(seqs, 4))
    assert mask.all()


def test_batches_cover_every_sequence_once(tokenizer):
    seqs = corpus.tokenise(corpus.read_lines()[:10], tokenizer, {}, 512)
    seen = []
    for ids, batch, mask in corpus.batches(seqs, 3):
        seen += ids
        for row, seq_id in enumerate(ids):
            n = seqs[seq_id].n
            assert mask[row].sum() == n
            assert batch[row, :n].tolist() == seqs[seq_id].input_ids
    assert sorted(seen) == list(range(10))
