"""Figure e5_kernel: measured kernel dimension against n(H-1)d_k (reading A)."""

import pandas as pd

from rankcollapse.heads import plot_kernel
from rankcollapse.io import setup_logging

log = setup_logging(snakemake.log[0])
spectra = pd.concat(map(pd.read_parquet, snakemake.input.spectra), ignore_index=True)
plot_kernel(
    pd.read_csv(snakemake.input.table),
    spectra,
    snakemake.output.png,
)
log.info("wrote %s", snakemake.output.png)
