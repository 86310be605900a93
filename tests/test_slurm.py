"""The small config run through a real SLURM cluster gives the results of a local run.

tests/slurm/setup.sh starts a single-node cluster on this machine (installing
slurm-wlm and munge when missing). The workflow then runs twice, side by side,
on config/test.yaml without the book: locally, and through `--executor slurm`
with workflow/profiles/slurm. Every result table (parquet, CSV) and JSON record
of the two runs must be equal, value for value. The SLURM run also asks for a
GPU per model job (gpu_per_job=1), which the test cluster grants in name only:
that sends those jobs to the gpu partition and must not change a number.

`pytest -m slurm` (as .ci/run does) starts the cluster when it is not up and
stops it afterwards; a run that does not select the marker uses a cluster that
is already up and skips the test otherwise. RANKCOLLAPSE_REQUIRE_SLURM=1 turns
the skip into a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "tests" / "slurm" / "setup.sh"
TEARDOWN = REPO / "tests" / "slurm" / "teardown.sh"
STATE = Path(os.environ.get("RANKCOLLAPSE_SLURM_DIR", "/tmp/rankcollapse-slurm"))
RUN_TIMEOUT_S = 2400

# The workflow run in both places: everything but the book, which only renders.
TARGETS = ["--omit-from", "book"]
SNAKEMAKE = [
    sys.executable, "-m", "snakemake",
    "--snakefile", str(REPO / "Snakefile"),
    "--configfile", str(REPO / "config" / "test.yaml"),
]  # fmt: skip

# Options for the test cluster, on top of the profile: it has no accounting
# database (so job states come from squeue), and its jobs take seconds, so
# their states are polled every second rather than every 40.
SLURM_OPTIONS = [
    "--workflow-profile", str(REPO / "workflow" / "profiles" / "slurm"),
    "--config", "gpu_per_job=1",
    "--slurm-status-command", "squeue",
    "--slurm-no-account",
    "--slurm-init-seconds-before-status-checks", "1",
    "--seconds-between-status-checks", "1",
    "--slurm-keep-successful-logs",
    "--latency-wait", "10",
]  # fmt: skip


def _skip(reason: str):
    if os.environ.get("RANKCOLLAPSE_REQUIRE_SLURM") == "1":
        pytest.fail(f"SLURM test required but: {reason}")
    pytest.skip(reason)


def _cluster_up(env: dict) -> bool:
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%t"],
            env=env, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and bool(
        set(out.stdout.split()) & {"idle", "mix", "alloc"}
    )


@pytest.fixture(scope="module")
def slurm_env(request):
    """Environment whose SLURM commands reach the test cluster, started if needed."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        _skip("snakemake-executor-plugin-slurm is not installed (pip install .[slurm])")
    env = dict(os.environ, SLURM_CONF=str(STATE / "etc" / "slurm.conf"))
    if _cluster_up(env):
        yield env
        return

    markexpr = request.config.option.markexpr or ""
    if "slurm" not in markexpr or "not slurm" in markexpr:
        _skip(
            "no SLURM test cluster is up: run tests/slurm/setup.sh first, or "
            "select this test with `pytest -m slurm` to start one"
        )
    proc = subprocess.run(
        ["bash", str(SETUP)], capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0 or not _cluster_up(env):
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        _skip(f"SLURM cannot be started here ({SETUP.name}: {last})")
    yield env
    subprocess.run(["bash", str(TEARDOWN)], capture_output=True, timeout=120)


def _result_files(root: Path) -> dict[str, Path]:
    """Result tables and JSON records under root/results, by relative path."""
    results = root / "results"
    return {
        str(p.relative_to(results)): p
        for p in sorted(results.rglob("*"))
        if p.suffix in {".parquet", ".csv", ".json"}
        and p.is_file()
        # timings of the jobs themselves differ between any two runs
        and "run_times" not in p.name
    }


def _without_timings(df: pd.DataFrame) -> pd.DataFrame:
    """Training logs record the loop's elapsed seconds, which no two runs share."""
    if "metric" in df.columns:
        df = df[df["metric"] != "elapsed_s"].reset_index(drop=True)
    return df


def _slurm_jobs(env: dict, run_id: str) -> pd.DataFrame:
    """Jobs of one workflow run: id, partition, state, rule (from the comment), GPUs."""
    out = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--name", run_id,
         "--Format=JobID:|,Partition:|,State:|,Comment:|,tres-per-job:"],
        env=env, capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    rows = [line.split("|") for line in out.strip().splitlines()]
    jobs = pd.DataFrame(rows, columns=["job", "partition", "state", "comment", "tres"])
    jobs["rule"] = jobs["comment"].str.extract(r"^rule_(.+?)(?:_wildcards_.*)?$")[0]
    return jobs


def _tail(path: Path, n: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def test_slurm_run_matches_local_run(slurm_env, tmp_path):
    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"
    local_log, slurm_log = tmp_path / "local.log", tmp_path / "slurm.log"

    # both runs at once: the SLURM one spends most of its time waiting
    start = time.monotonic()
    local_cmd = SNAKEMAKE + ["--cores", "1", "-d", str(local_dir)] + TARGETS
    slurm_cmd = SNAKEMAKE + SLURM_OPTIONS + ["-d", str(slurm_dir)] + TARGETS
    with open(local_log, "w") as lf, open(slurm_log, "w") as sf:
        local = subprocess.Popen(
            local_cmd, cwd=REPO, env=slurm_env, stdout=lf, stderr=subprocess.STDOUT
        )
        slurm = subprocess.Popen(
            slurm_cmd, cwd=REPO, env=slurm_env, stdout=sf, stderr=subprocess.STDOUT
        )
        took = {}
        try:
            while len(took) < 2 and time.monotonic() - start < RUN_TIMEOUT_S:
                for name, proc in (("local", local), ("SLURM", slurm)):
                    if name not in took and proc.poll() is not None:
                        took[name] = time.monotonic() - start
                time.sleep(0.5)
        finally:
            for proc in (local, slurm):
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=60)
    assert local.returncode == 0, f"local run failed:\n{_tail(local_log)}"
    assert slurm.returncode == 0, f"SLURM run failed:\n{_tail(slurm_log)}"
    print(f"local run {took['local']:.0f} s, SLURM run {took['SLURM']:.0f} s")

    # every job but the workflow's local rules went through SLURM, and only
    # model jobs to the gpu partition
    local_text, slurm_text = local_log.read_text(), slurm_log.read_text()
    stats = local_text.split("Job stats:")[1].split("total")[0]
    local_jobs = Counter(
        {r: int(n) for r, n in re.findall(r"^(\S+)\s+(\d+)$", stats, re.M)}
    )
    run_id = re.search(r"SLURM run ID: (\S+)", slurm_text).group(1)
    jobs = _slurm_jobs(slurm_env, run_id)
    on_submit_node = Counter(re.findall(r"^localrule (\S+):", slurm_text, re.M))
    # squeue forgets finished jobs after MinJobAge, so the count of submitted
    # jobs comes from the rule names in the plugin's own job log paths
    pattern = r"submitted with SLURM jobid \d+ \(log: \S*/slurm_logs/rule_([^/]+)/"
    submitted = Counter(re.findall(pattern, slurm_text))
    assert submitted + on_submit_node == local_jobs, (submitted, local_jobs)
    assert set(jobs["rule"]) <= set(local_jobs), jobs.to_string()
    assert (jobs["state"] == "COMPLETED").all(), jobs.to_string()
    asks_gpu = jobs["tres"].str.contains("gpu")
    assert asks_gpu.any() and (~asks_gpu).any(), jobs.to_string()
    assert (jobs["partition"] == asks_gpu.map({True: "gpu", False: "cpu"})).all(), (
        jobs.to_string()
    )

    # the same result files, with the same values
    local_files, slurm_files = _result_files(local_dir), _result_files(slurm_dir)
    assert sorted(slurm_files) == sorted(local_files)
    assert "claims.json" in local_files and "run_record.json" in local_files
    for name, path in local_files.items():
        other = slurm_files[name]
        if path.suffix == ".parquet":
            pd.testing.assert_frame_equal(
                _without_timings(pd.read_parquet(other)),
                _without_timings(pd.read_parquet(path)),
                check_exact=True, obj=name,
            )  # fmt: skip
        elif path.suffix == ".csv":
            assert other.read_bytes() == path.read_bytes(), name
        else:
            assert json.loads(other.read_text()) == json.loads(path.read_text()), name
    figures = sorted(p.name for p in (local_dir / "results").rglob("*.png"))
    assert figures == sorted(p.name for p in (slurm_dir / "results").rglob("*.png"))
    tables = [n for n in local_files if not n.endswith(".json")]
    print(f"equal: {len(tables)} tables, {len(local_files) - len(tables)} JSON files")
