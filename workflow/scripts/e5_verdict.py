"""The C4 verdict, computed from the E5 tables by heads.verdict_c4."""

import pandas as pd

from rankcollapse.heads import verdict_c4
from rankcollapse.io import setup_logging

log = setup_logging(snakemake.log[0])
inp = snakemake.input
verdict = verdict_c4(
    pd.read_csv(inp.kernel),
    pd.read_csv(inp.reading_b),
    pd.read_csv(inp.symmetry),
    pd.read_csv(inp.mlp),
    snakemake.params.cfg,
)
verdict.write(snakemake.output[0])
log.info("C4: %s. %s", verdict.verdict, verdict.summary)
