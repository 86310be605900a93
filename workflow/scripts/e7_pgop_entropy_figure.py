"""Attention entropy over PG-OP training, read from experiment E6's log (E7)."""

import pandas as pd

from rankcollapse import plotting
from rankcollapse.entropy import plot_pgop_entropy
from rankcollapse.io import setup_logging

log = setup_logging(snakemake.log[0])
df = pd.read_parquet(snakemake.input[0])
log.info("%d attn_entropy rows", int((df.metric == "attn_entropy").sum()))

fig = plot_pgop_entropy(df)
plotting.save(fig, snakemake.output.png)
