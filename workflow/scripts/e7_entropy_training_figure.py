"""Figure and table of the from-scratch entropy-collapse run, all arms (E7)."""

import pandas as pd

from rankcollapse import plotting
from rankcollapse.entropy import plot_training, training_summary
from rankcollapse.io import setup_logging, write_csv

log = setup_logging(snakemake.log[0])
threshold = snakemake.params.collapse_entropy
df = pd.concat(map(pd.read_parquet, snakemake.input), ignore_index=True)

arms = df[["arm", "lr", "sigma_reparam"]].drop_duplicates()
summary = arms.merge(training_summary(df, threshold), on="arm")
write_csv(summary, snakemake.output.table)
log.info("summary:\n%s", summary.to_string())

fig = plot_training(df, threshold)
plotting.save(fig, snakemake.output.png)
