"""Helpers the book's pages call to show results: claims, verdicts, figures, tables.

Pages read only ``results/``; its location comes from the environment variable
``RANKCOLLAPSE_RESULTS`` that the ``book`` rule sets (default: ``results``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
from IPython.display import Image, Markdown, display

BADGE = {
    "confirmed": "✅ confirmed",
    "qualified": "🟡 qualified",
    "not supported": "❌ not supported",
    "not run": "⚪ not run",
}


def results_dir() -> Path:
    return Path(os.environ.get("RANKCOLLAPSE_RESULTS", "results"))


def claims() -> dict:
    path = results_dir() / "claims.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def claim_table() -> None:
    """The overview table: claim, abstract's words, verdict, one-line summary."""
    rows = [
        {
            "claim": cid,
            "statement": v["claim_text"],
            "verdict": BADGE[v["verdict"]],
            "summary": v["summary"],
        }
        for cid, v in claims().items()
    ]
    display(Markdown(pd.DataFrame(rows).to_markdown(index=False)))


def verdict(claim: str) -> None:
    """The verdict of one claim with its evidence, as a short block."""
    v = claims().get(claim)
    if v is None:
        display(Markdown(f"**{claim}: not run.**"))
        return
    lines = [f"**Verdict for {claim}: {BADGE[v['verdict']]}.** {v['summary']}", ""]
    for key, value in v.get("evidence", {}).items():
        lines.append(f"- `{key}`: {_fmt(value)}")
    if v.get("files"):
        lines += ["", "Backed by: " + ", ".join(f"`{f}`" for f in v["files"])]
    display(Markdown("\n".join(lines)))


def figure(name: str) -> None:
    """Show results/figures/<name>.png; the caption is written in the page."""
    path = results_dir() / "figures" / f"{name}.png"
    if path.is_file():
        display(Image(filename=str(path)))
    else:
        display(Markdown(f"*Figure `{name}` was not produced by this run.*"))


def table(
    name: str, query: str | None = None, floatfmt: str = ".4g", columns=None
) -> None:
    """Show results/tables/<name>.csv as a Markdown table (only ``columns``, in
    that order, when given)."""
    path = results_dir() / "tables" / f"{name}.csv"
    if not path.is_file():
        display(Markdown(f"*Table `{name}` was not produced by this run.*"))
        return
    df = pd.read_csv(path)
    if query:
        df = df.query(query)
    if columns:
        df = df[[c for c in columns if c in df.columns]]
    display(Markdown(df.to_markdown(index=False, floatfmt=floatfmt)))


def run_record() -> dict:
    path = results_dir() / "run_record.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)
