"""Figure and table of rank collapse in width, all models (experiment E7)."""

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402

from rankcollapse.io import setup_logging, write_csv  # noqa: E402
from rankcollapse.width import gap_summary, plot_width  # noqa: E402

snakemake = snakemake  # noqa: F821 - injected by Snakemake's script directive
log = setup_logging(snakemake.log[0])
df = pd.concat(map(pd.read_parquet, snakemake.input), ignore_index=True)

summary = gap_summary(df)
write_csv(summary, snakemake.output.table)
log.info("gap summary:\n%s", summary.to_string())

fig = plot_width(df)
fig.savefig(snakemake.output.png, dpi=150)
fig.savefig(snakemake.output.svg)
