"""Rank change (LN(X) - X) of every synthetic family, n, gamma and beta."""

import pandas as pd

from rankcollapse import layernorm
from rankcollapse.io import setup_logging

log = setup_logging(snakemake.log[0])
layernorm.plot_synthetic(
    pd.read_csv(snakemake.input[0]), snakemake.params.tolerance, snakemake.output.png
)
log.info("figure written to %s", snakemake.output.png)
