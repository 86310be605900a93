"""Attention entropy over PG-OP training, read from experiment E6's log (E7)."""

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402

from rankcollapse.entropy import plot_pgop_entropy  # noqa: E402
from rankcollapse.io import setup_logging  # noqa: E402

snakemake = snakemake  # noqa: F821 - injected by Snakemake's script directive
log = setup_logging(snakemake.log[0])
df = pd.read_parquet(snakemake.input[0])
log.info("%d attn_entropy rows", int((df.metric == "attn_entropy").sum()))

fig = plot_pgop_entropy(df)
fig.savefig(snakemake.output.png, dpi=150)
fig.savefig(snakemake.output.svg)
