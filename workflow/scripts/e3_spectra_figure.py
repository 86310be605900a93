"""Centred spectra of one LayerNorm's input and output at real sites."""

import pandas as pd

from rankcollapse import layernorm
from rankcollapse.io import setup_logging

log = setup_logging(snakemake.log[0])
spectra = pd.concat(map(pd.read_parquet, snakemake.input), ignore_index=True)
layernorm.plot_real_spectra(spectra, snakemake.params.ln, snakemake.output.png)
log.info("figure written to %s", snakemake.output.png)
