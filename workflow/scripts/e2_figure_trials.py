"""E2 figure: distance from collapse per draw and per sequence (min sigma_min/sigma_1)."""

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from rankcollapse.genericity import EPS64, plot_trials, stack_shape  # noqa: E402
from rankcollapse.io import setup_logging  # noqa: E402
from rankcollapse.metrics import EPS32  # noqa: E402

log = setup_logging(snakemake.log[0])
p = snakemake.params
units = pd.read_parquet(snakemake.input.units)

# The two rank tolerances, at the random inputs' n and the model's d.
lines = {}
for model, path in p.model_dirs.items():
    width = max(p.n_tokens, stack_shape(path).d)
    lines[model] = {
        "default rtol (float32)": (width * EPS32, "--"),
        "float64 rtol": (width * EPS64, ":"),
    }

fig = plot_trials(units, p.labels, lines)
fig.savefig(snakemake.output.png, dpi=150)
fig.savefig(snakemake.output.svg)
log.info("figure written")
