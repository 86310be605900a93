"""environment.yml stays in step with pyproject.toml."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch", "matplotlib": "matplotlib-base"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_environment_lists_every_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    wanted |= {_name(r) for r in project["optional-dependencies"]["test"]}

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {_name(d) for d in env["dependencies"] if isinstance(d, str)}
    pip = {
        _name(d)
        for d in next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
        if not d.startswith("-e")
    }
    have = conda | pip
    missing = {w for w in wanted if w not in have and CONDA_NAMES.get(w) not in have}
    assert not missing, f"environment.yml lacks {sorted(missing)}"
    assert "-e ." in next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))


def test_python_versions_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert f"python{project['requires-python']}" in env["dependencies"]
