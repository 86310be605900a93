"""F5: the singular value that LayerNorm adds to a nearly collapsed set, vs delta."""

import pandas as pd

from rankcollapse import layernorm
from rankcollapse.io import setup_logging

log = setup_logging(snakemake.log[0])
layernorm.plot_f5(
    pd.read_csv(snakemake.input.f5),
    pd.read_csv(snakemake.input.slopes),
    snakemake.output.png,
)
log.info("figure written to %s", snakemake.output.png)
