"""C5 verdict from the E6 tables."""

import pandas as pd

from rankcollapse import pgop
from rankcollapse.io import setup_logging

log = setup_logging(snakemake.log[0])
inp = snakemake.input
verdict = pgop.verdict_c5(
    pd.read_csv(inp.overhead),
    pd.read_parquet(inp.checks),
    pd.read_parquet(inp.identifiability),
    pd.read_csv(inp.summary),
    snakemake.params.decision,
)
log.info("C5: %s - %s", verdict.verdict, verdict.summary)
verdict.write(snakemake.output[0])
