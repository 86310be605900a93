"""E2 figure: how far each draw and each sequence stays from collapse."""

import pandas as pd

from rankcollapse import plotting
from rankcollapse.genericity import EPS64, plot_trials, stack_shape
from rankcollapse.io import setup_logging
from rankcollapse.metrics import EPS32

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

plotting.save(plot_trials(units, p.labels, lines), snakemake.output.png)
log.info("figure written")
