"""The symmetry table and the mechanism x symmetry cross table (E8)."""

import pandas as pd

from rankcollapse import plotting
from rankcollapse.io import setup_logging, write_csv
from rankcollapse.symmetry import (
    cross_table,
    definitions_table,
    plot_cross,
    symmetry_table,
)

log = setup_logging(snakemake.log[0])
p = snakemake.params
checks = pd.concat(map(pd.read_parquet, snakemake.input), ignore_index=True)

cross = cross_table(checks, p.symmetry_tol, p.break_tol)
write_csv(cross, snakemake.output.cross)
table = symmetry_table(cross)
write_csv(table, snakemake.output.table)
write_csv(definitions_table(), snakemake.output.definitions)
for r in table.itertuples():
    log.info(
        "%s | %s: vanilla %.2e (%s), %s %.2e (%s)",
        r.model,
        r.phenomenon,
        r.vanilla_check,
        r.vanilla_has_symmetry,
        r.mechanism,
        r.break_check,
        r.mechanism_breaks_it,
    )

fig = plot_cross(cross)
plotting.save(fig, snakemake.output.png)
