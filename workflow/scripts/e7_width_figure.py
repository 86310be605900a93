"""Figure and table of rank collapse in width, all models (experiment E7)."""

import pandas as pd

from rankcollapse import plotting
from rankcollapse.io import setup_logging, write_csv
from rankcollapse.width import gap_summary, plot_width

log = setup_logging(snakemake.log[0])
df = pd.concat(map(pd.read_parquet, snakemake.input), ignore_index=True)

summary = gap_summary(df)
write_csv(summary, snakemake.output.table)
log.info("gap summary:\n%s", summary.to_string())

fig = plot_width(df)
plotting.save(fig, snakemake.output.png)
