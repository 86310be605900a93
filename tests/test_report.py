"""Snakemake's HTML report: every figure and table is annotated.

Reads the rules without running them: each output that is a figure
(results/figures/*.png) or a table (results/tables/*.csv) is marked
report(...), and every marked output has a category and a caption file that
names the command regenerating it. tests/test_workflow.py builds the report on
a finished run of the small config.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "config" / "test.yaml"


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
