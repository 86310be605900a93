"""The text the experiments read: the shipped sentences, tokenised per model.

Two settings: ``sentences`` (one sequence per line, lengths as written) and
``fixed_length`` (Dong et al.'s setting: the token stream of the whole corpus cut
into sequences of one length, so no sequence needs padding).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch


class CorpusError(ValueError):
    """A corpus that cannot be used as configured; the message names the line."""


@dataclass
class Sequence:
    """One tokenised sequence: its id in the corpus and its token ids."""

    seq_id: int
    input_ids: list[int]

    @property
    def n(self) -> int:
        return len(self.input_ids)


def shipped_corpus_path() -> Path:
    return Path(str(resources.files("rankcollapse") / "data" / "corpus.txt"))


def read_lines(path: str | Path | None = None) -> list[str]:
    """Non-empty lines of the corpus file (the shipped one when ``path`` is None)."""
    path = Path(path) if path else shipped_corpus_path()
    if not path.is_file():
        raise CorpusError(f"corpus.path: no file at {path}")
    return [
        ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()
    ]


def tokenise(lines: list[str], tokenizer, cfg: dict, max_positions: int):
    """Turn corpus lines into ``Sequence`` objects as the ``corpus`` config says.

    ``cfg`` keys: ``mode`` (sentences | fixed_length), ``fixed_length``,
    ``special_tokens``, ``too_long`` (error | truncate), ``max_sequences``.
    """
    special = bool(cfg.get("special_tokens", True))
    mode = cfg.get("mode", "sentences")
    limit = cfg.get("max_sequences")

    if mode == "sentences":
        seqs = []
        for i, line in enumerate(lines):
            ids = tokenizer(line, add_special_tokens=special)["input_ids"]
            if len(ids) > max_positions:
                if cfg.get("too_long", "error") != "truncate":
                    raise CorpusError(
                        f"corpus line {i + 1} has {len(ids)} tokens, more than the "
                        f"model's {max_positions} positions; shorten it or set "
                        "corpus.too_long: truncate"
                    )
                ids = (
                    ids[: max_positions - 1] + ids[-1:]
                    if special
                    else ids[:max_positions]
                )
            seqs.append(Sequence(i, ids))
    elif mode == "fixed_length":
        length = int(cfg["fixed_length"])
        if length > max_positions:
            raise CorpusError(
                f"corpus.fixed_length {length} exceeds the model's {max_positions} "
                "positions"
            )
        body = length - 2 if special else length
        stream = [
            t
            for line in lines
            for t in tokenizer(line, add_special_tokens=False)["input_ids"]
        ]
        seqs = []
        for k in range(len(stream) // body):
            ids = stream[k * body : (k + 1) * body]
            if special:
                ids = [tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]
            seqs.append(Sequence(k, ids))
    else:
        raise CorpusError(f"corpus.mode {mode!r}: expected sentences or fixed_length")

    return seqs[:limit] if limit else seqs


def batches(seqs: list[Sequence], batch_size: int, pad_id: int = 0):
    """Yield ``(seq_ids, input_ids, attention_mask)`` padded batches.

    Sequences are grouped by length (stable sort) so that batches carry little
    padding; ``seq_ids`` says which corpus sequence each row is.
    """
    ordered = sorted(seqs, key=lambda s: s.n)
    for start in range(0, len(ordered), batch_size):
        chunk = ordered[start : start + batch_size]
        width = max(s.n for s in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, s in enumerate(chunk):
            ids[row, : s.n] = torch.tensor(s.input_ids)
            mask[row, : s.n] = 1
        yield [s.seq_id for s in chunk], ids, mask
