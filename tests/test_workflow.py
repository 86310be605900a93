"""The real Snakemake DAG on config/test.yaml, in a temporary folder, book included."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]
pytestmark = pytest.mark.slow


def snakemake(workdir, *args, config=ROOT / "config" / "test.yaml", check=True):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [
            *SNAKEMAKE,
            "--cores",
            "2",
            "--configfile",
            str(config),
            "-d",
            str(workdir),
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {args} failed:\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    snakemake(workdir)
    return workdir


def test_dag_builds_every_claim_and_the_book(finished_run):
    claims = json.loads((finished_run / "results" / "claims.json").read_text())
    assert sorted(claims) == [f"C{i}" for i in range(1, 8)]
    assert claims["C2"]["verdict"] in ("confirmed", "qualified", "not supported")
    html = finished_run / "results" / "book" / "html"
    assert (html / "index.html").is_file()
    assert "Verdict for C2" in (html / "c2_residual.html").read_text()


def test_full_variant_matches_library(finished_run):
    checks = pd.read_csv(finished_run / "results" / "tables" / "e1_checks.csv")
    assert (checks.max_abs_diff <= 1e-5).all()
    assert set(checks.check) >= {"full vs library", "attn+ln vs dong:san"}


def test_rerun_schedules_nothing(finished_run):
    proc = snakemake(finished_run, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_one_figure_rebuilds_only_its_chain(finished_run):
    figure = finished_run / "results" / "figures" / "e1_residual_depth.png"
    figure.unlink()
    proc = snakemake(finished_run, "-n", "results/figures/e1_residual_depth.png")
    out = proc.stdout + proc.stderr
    jobs = out.split("Job stats:")[1].split("total")[0]
    assert "e1_figures" in jobs
    assert "e1_depth" not in jobs and "fetch_model" not in jobs
    snakemake(finished_run, "results/figures/e1_residual_depth.png")
    assert figure.is_file()


def test_report_lists_every_figure_and_table(finished_run):
    report = finished_run / "results" / "report.html"
    snakemake(finished_run, "--report", str(report))

    # the report embeds its entries as JavaScript objects
    html = report.read_text()
    results = json.loads(re.search(r"var results = (\{.*?\});\n", html, re.S)[1])
    categories = json.loads(re.search(r"var categories = (\{.*?\});\n", html)[1])
    produced = [
        str(p.relative_to(finished_run))
        for pattern in ("results/figures/*.png", "results/tables/*.csv")
        for p in finished_run.glob(pattern)
    ]
    missing = [p for p in produced if p not in results]
    assert produced and not missing, f"not in the report: {missing}"
    assert all(entry["caption"].strip() for entry in results.values())
    listed = {f for sub in categories.values() for files in sub.values() for f in files}
    assert listed == set(results) and {"Claims", "Run"} <= set(categories)


def test_bad_config_value_fails_before_any_job(tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    cfg["corpus"]["mode"] = "paragraphs"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path / "run", config=tmp_path / "bad.yaml", check=False)
    assert proc.returncode != 0
    assert "paragraphs" in proc.stderr and "mode" in proc.stderr
    assert not (tmp_path / "run" / "results").exists()
    assert not (tmp_path / "run" / "models").exists()


def test_missing_model_fails_and_names_it(tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    cfg["analyse"] = ["ghost"]
    cfg["models"]["ghost"] = {
        "source": "hub",
        "label": "ghost",
        "repo_id": "nobody/ghost-model",
        "revision": "0" * 40,
    }
    (tmp_path / "ghost.yaml").write_text(yaml.safe_dump(cfg))
    env_cache = tmp_path / "empty-cache"
    env_cache.mkdir()
    os.environ["HF_HUB_CACHE"] = str(env_cache)
    try:
        proc = snakemake(tmp_path / "run", config=tmp_path / "ghost.yaml", check=False)
    finally:
        del os.environ["HF_HUB_CACHE"]
    assert proc.returncode != 0
    log = (tmp_path / "run" / "logs" / "fetch_model" / "ghost.log").read_text()
    assert "models.ghost" in log and "nobody/ghost-model" in log
    assert not (tmp_path / "run" / "models" / "ghost" / "provenance.json").exists()
    shutil.rmtree(tmp_path / "run", ignore_errors=True)
