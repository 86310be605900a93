"""Figure e5_symmetry: output and MLP invariance against how far z_h moved."""

import pandas as pd

from rankcollapse.heads import plot_symmetry
from rankcollapse.io import setup_logging

log = setup_logging(snakemake.log[0])


def read(files):
    return pd.concat(map(pd.read_parquet, files), ignore_index=True)


plot_symmetry(
    read(snakemake.input.symmetry),
    read(snakemake.input.mlp),
    snakemake.output.png,
)
log.info("wrote %s", snakemake.output.png)
