"""E2 figure: sigma_min / sigma_1 against eps around the collapsing weight set."""

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from rankcollapse.genericity import plot_exceptional  # noqa: E402
from rankcollapse.io import setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])
long = pd.concat(map(pd.read_parquet, snakemake.input.long), ignore_index=True)
table = pd.read_csv(snakemake.input.table)

fit_range = [10.0**e for e in snakemake.params.fit_exponents]
fig = plot_exceptional(long, table, snakemake.params.labels, fit_range)
fig.savefig(snakemake.output.png, dpi=150)
fig.savefig(snakemake.output.svg)
log.info("figure written")
