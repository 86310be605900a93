"""Figure e5_readout: W_O spectra and what each reader gets back of z (reading B)."""

import pandas as pd

from rankcollapse.heads import plot_readout
from rankcollapse.io import setup_logging

log = setup_logging(snakemake.log[0])
spectra = pd.concat(map(pd.read_parquet, snakemake.input.spectra), ignore_index=True)
plot_readout(
    pd.read_csv(snakemake.input.table),
    spectra,
    snakemake.output.png,
)
log.info("wrote %s", snakemake.output.png)
