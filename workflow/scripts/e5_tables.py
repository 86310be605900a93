"""The E5 tables the book and the C4 verdict read, over every analysed model."""

import pandas as pd

from rankcollapse.heads import kernel_table, reading_b_table, symmetry_table
from rankcollapse.io import setup_logging, write_csv

log = setup_logging(snakemake.log[0])


def read(files):
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


kernel = kernel_table(read(snakemake.input.kernel))
readout = reading_b_table(read(snakemake.input.w_o), read(snakemake.input.recovery))
sym, mlp = symmetry_table(read(snakemake.input.symmetry), read(snakemake.input.mlp))

for table, path in [
    (kernel, snakemake.output.kernel),
    (readout, snakemake.output.reading_b),
    (sym, snakemake.output.symmetry),
    (mlp, snakemake.output.mlp),
]:
    write_csv(table, path)
    log.info("wrote %s (%d rows)", path, len(table))
