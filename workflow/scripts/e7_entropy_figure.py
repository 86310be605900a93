"""Figure and table of attention entropy per layer and head, all models (E7)."""

import pandas as pd

from rankcollapse import plotting
from rankcollapse.entropy import plot_model_entropy
from rankcollapse.io import setup_logging, write_csv

log = setup_logging(snakemake.log[0])
df = pd.concat(map(pd.read_parquet, snakemake.input), ignore_index=True)

# Per model and layer: mean over sequences and heads, and the lowest head.
per_head = df.groupby(["model", "layer", "head", "metric"]).value.mean().unstack()
table = (
    per_head.groupby(["model", "layer"])
    .agg(
        entropy_mean=("entropy", "mean"),
        entropy_norm_mean=("entropy_norm", "mean"),
        entropy_norm_min_head=("entropy_norm", "min"),
        entropy_norm_max_head=("entropy_norm", "max"),
    )
    .reset_index()
)
write_csv(table, snakemake.output.table)

fig = plot_model_entropy(df)
plotting.save(fig, snakemake.output.png)
