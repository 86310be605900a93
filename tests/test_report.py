"""Snakemake's HTML report: every figure and table annotated, and the report builds.

The first test reads the rules without running them: each output that is a
figure (results/figures/*.png) or a table (results/tables/*.csv) is marked
report(...), and every marked output has a category and a caption file that
says how to regenerate it. The second runs the small config (without the book)
and builds `snakemake --report` on the finished run: the report must list every
figure and table the run produced, each with its caption.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "config" / "test.yaml"
SNAKEMAKE = [
    sys.executable, "-m", "snakemake",
    "--snakefile", str(REPO / "Snakefile"),
    "--configfile", str(TEST_CONFIG),
]  # fmt: skip


def _is_figure_or_table(path: str) -> bool:
    return bool(re.match(r"results/(figures/.+\.png|tables/.+\.csv)$", path))


def _report_outputs(workdir: Path) -> list[tuple[str, str, object]]:
    """(rule, output pattern, report flag or None) for every rule output."""
    from snakemake.api import SnakemakeApi
    from snakemake.io import get_flag_value, is_flagged
    from snakemake.settings.types import (
        ConfigSettings,
        OutputSettings,
        Quietness,
        ResourceSettings,
        StorageSettings,
    )

    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(),
            config_settings=ConfigSettings(configfiles=[TEST_CONFIG]),
            storage_settings=StorageSettings(),
            snakefile=REPO / "Snakefile",
            workdir=workdir,
        )
        # the rules as parsed; the public API exposes no per-file flags
        return [
            (rule.name, str(f), _report_flag(f, is_flagged, get_flag_value))
            for rule in workflow._workflow.rules
            for f in rule.output
        ]


def _report_flag(f, is_flagged, get_flag_value):
    return get_flag_value(f, "report") if is_flagged(f, "report") else None


def test_every_figure_and_table_is_in_the_report(tmp_path):
    outputs = _report_outputs(tmp_path)
    assert any(rule == "claims" for rule, _, _ in outputs)

    unmarked = [
        f"{rule}: {path}"
        for rule, path, flag in outputs
        if _is_figure_or_table(path) and flag is None
    ]
    assert not unmarked, "figures and tables outside the report:\n" + "\n".join(
        unmarked
    )

    for rule, path, flag in outputs:
        if flag is None:
            continue
        assert flag.category, f"{rule}: {path} has no report category"
        assert flag.caption is not None, f"{rule}: {path} has no caption"
        caption = Path(flag.caption.get_path_or_uri(secret_free=True))
        assert caption.is_file(), f"{rule}: caption {caption} does not exist"
        text = caption.read_text()
        stem = path.split("{")[0]  # a wildcard's value is not known here
        assert "snakemake" in text and stem in text, (
            f"{caption.name} should name the command that regenerates {path}"
        )


@pytest.mark.slow
def test_report_builds_on_a_finished_small_run(tmp_path):
    run = subprocess.run(
        SNAKEMAKE + ["--cores", "2", "-d", str(tmp_path), "--omit-from", "book"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]

    report = tmp_path / "results" / "report.html"
    build = subprocess.run(
        SNAKEMAKE + ["-d", str(tmp_path), "--report", str(report)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-4000:]

    # the report embeds its entries as JavaScript objects
    html = report.read_text()
    results = json.loads(re.search(r"var results = (\{.*?\});\n", html, re.S)[1])
    categories = json.loads(re.search(r"var categories = (\{.*?\});\n", html)[1])
    produced = sorted(
        str(p.relative_to(tmp_path))
        for p in (tmp_path / "results").rglob("*")
        if _is_figure_or_table(str(p.relative_to(tmp_path)))
    )
    missing = [p for p in produced if p not in results]
    assert not missing, f"produced but not in the report: {missing}"
    for path, entry in results.items():
        assert entry["caption"].strip(), f"{path} has an empty caption"
    listed = {f for sub in categories.values() for files in sub.values() for f in files}
    assert listed == set(results)
    assert {"Claims", "Run"} <= set(categories)
