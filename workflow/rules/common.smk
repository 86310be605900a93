# Helpers shared by every rule file: model names, paths and the registries that
# `rule all`, `rule claims` and the book read. Rule files add to the registries.

import re
from snakemake.exceptions import WorkflowError
from pathlib import Path

MODELS = list(config["analyse"])
for _name in MODELS:
    if _name not in config["models"]:
        raise WorkflowError(
            f"config key analyse names {_name!r}, which is not in config key models "
            f"(known: {sorted(config['models'])})"
        )
MODELS_DIR = config["models_dir"]
REPO = Path(workflow.basedir)

# Experiment name -> the files its rules produce for `rule all`.
TARGETS = {}

# Claim id -> the verdict file that decides it (written by an experiment rule).
VERDICT_FILES = {}


wildcard_constraints:
    model="|".join(map(re.escape, config["models"])),


def model_dir(name):
    return f"{MODELS_DIR}/{name}"


def model_label(name):
    return config["models"][name]["label"]


def fetch_inputs(wildcards):
    """A random model borrows its tokenizer from another fetched model."""
    spec = config["models"][wildcards.model]
    other = spec.get("tokenizer_from")
    return [f"{model_dir(other)}/provenance.json"] if other else []


def all_targets(wildcards):
    files = [f for group in TARGETS.values() for f in group]
    return files + ["results/claims.json", "results/book/html/index.html"]


def caption(name):
    return REPO / "workflow" / "report" / f"{name}.rst"
