"""Claim verdicts: one JSON file per claim, merged into ``results/claims.json``.

A verdict is one of ``confirmed``, ``qualified``, ``not supported`` or
``not run``; it is computed from result tables by a tested function in the
experiment's module and carries the evidence (numbers) and the files behind it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

VERDICTS = ("confirmed", "qualified", "not supported", "not run")

CLAIMS = {
    "C1": "LayerNorm preserves the affine rank of the token set exactly; it "
    "preserves matrix rank when its bias is zero.",
    "C2": "Residual connections generically obstruct rank collapse in BERT-base, "
    "with no help from the MLP.",
    "C3": "The MLP generates feature directions outside the linear span of the "
    "original token embeddings; no stack of attention layers can.",
    "C4": "After heads are summed through W_O, per-head contributions are not "
    "canonically attributable: n(H-1)d_k degrees of freedom per layer stay "
    "ambiguous; the MLP cannot undo it.",
    "C5": "A position-gated output projection (PG-OP), overhead < 1.6% of W_O, is "
    "a constructive partial remedy for head-channel non-identifiability.",
    "C6": "Rank collapse in depth, in width, head-channel non-identifiability and "
    "entropy collapse each correspond to a distinct symmetry of the forward pass.",
    "C7": "A feed-forward width of 4d is a heuristic; rank preservation does not "
    "require it.",
}


@dataclass
class Verdict:
    """The outcome for one claim, with the numbers and files that decide it."""

    claim: str
    verdict: str
    summary: str
    evidence: dict = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    experiments: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.claim not in CLAIMS:
            raise ValueError(f"unknown claim {self.claim!r}")
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} not in {VERDICTS}")

    def write(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, default=_jsonable) + "\n")
        tmp.replace(path)

    @classmethod
    def read(cls, path: str | Path) -> Verdict:
        return cls(**json.loads(Path(path).read_text()))


def _jsonable(x):
    if hasattr(x, "item"):
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


def merge(verdict_files: list[str | Path]) -> dict:
    """All seven claims, each from its verdict file or ``not run`` when absent."""
    found = {v.claim: v for v in map(Verdict.read, verdict_files)}
    out = {}
    for claim, text in CLAIMS.items():
        v = found.get(claim) or Verdict(claim, "not run", "No experiment ran.")
        out[claim] = {"claim_text": text, **asdict(v)}
    return out
