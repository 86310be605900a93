"""E6 checks of every model: a long table (model, metric, value) and, for the book,
one row per metric with a column per model."""

import pandas as pd

from rankcollapse.io import setup_logging, write_csv, write_parquet

log = setup_logging(snakemake.log[0])
long = pd.concat(map(pd.read_parquet, snakemake.input), ignore_index=True)
write_parquet(long, snakemake.output.long)
wide = long.pivot(index="metric", columns="model", values="value")
wide = wide.loc[list(dict.fromkeys(long["metric"]))].reset_index()
wide.columns.name = None
log.info("checks:\n%s", wide.to_string())
write_csv(wide, snakemake.output.table)
