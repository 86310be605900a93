"""Verdict for claim C6 from the symmetry tables and E7's summaries."""

import pandas as pd

from rankcollapse.io import setup_logging
from rankcollapse.symmetry import verdict_c6

log = setup_logging(snakemake.log[0])
inp = snakemake.input
v = verdict_c6(
    pd.read_csv(inp.table),
    pd.read_csv(inp.cross),
    pd.read_csv(inp.width),
    pd.read_csv(inp.training),
    snakemake.params.cfg,
)
v.files = [str(f) for f in inp]
v.write(snakemake.output[0])
log.info("C6: %s. %s", v.verdict, v.summary)
