"""E2 figure: sigma_min / sigma_1 against eps around the collapsing weight set."""

import pandas as pd

from rankcollapse import plotting
from rankcollapse.genericity import plot_exceptional
from rankcollapse.io import setup_logging

log = setup_logging(snakemake.log[0])
p = snakemake.params
long = pd.concat(map(pd.read_parquet, snakemake.input.long), ignore_index=True)
table = pd.read_csv(snakemake.input.table)

fit_range = [10.0**e for e in p.fit_exponents]
plotting.save(plot_exceptional(long, table, p.labels, fit_range), snakemake.output.png)
log.info("figure written")
