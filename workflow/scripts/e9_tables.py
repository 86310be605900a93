"""E9 tables: one summary per run and phase, and mean and spread per width."""

import pandas as pd

from rankcollapse import ffn_width
from rankcollapse.io import setup_logging, write_csv, write_parquet

log = setup_logging(snakemake.log[0])
p = snakemake.params

parts = []
for path in snakemake.input.runs:
    metrics = pd.read_parquet(path)
    keys = metrics[["multiple", "seed", "d", "d_ff"]].iloc[0].to_dict()
    summary = ffn_width.run_summary(
        metrics, p.containment_subspace, p.generation_subspace
    )
    parts.append(summary.assign(**keys))
summary = pd.concat(parts, ignore_index=True)
write_parquet(summary, snakemake.output.summary)

# Wide per-run table for reading, and the per-width statistics.
runs = summary.pivot_table(
    index=["multiple", "d_ff", "seed", "phase"], columns="quantity", values="value"
).reset_index()
write_csv(runs, snakemake.output.runs)
widths = ffn_width.width_table(summary)
write_csv(widths, snakemake.output.widths)
for row in widths[widths.phase == "trained"].itertuples():
    log.info("%s at %dd: %.4g +- %.2g", row.quantity, row.multiple, row.mean, row.sd)
