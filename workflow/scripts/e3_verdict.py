"""The C1 verdict from the real-site counts and the synthetic table."""

import pandas as pd

from rankcollapse import layernorm
from rankcollapse.io import setup_logging

log = setup_logging(snakemake.log[0])
verdict = layernorm.verdict_c1(
    pd.read_csv(snakemake.input.counts, dtype={"tolerance": str}),
    pd.read_csv(snakemake.input.synthetic),
    snakemake.params.e3,
)
verdict.files = [*snakemake.input]
verdict.write(snakemake.output[0])
log.info("C1: %s. %s", verdict.verdict, verdict.summary)
