"""Verdict C7 from E9's per-run summaries."""

import pandas as pd

from rankcollapse.ffn_width import verdict_c7
from rankcollapse.io import setup_logging

log = setup_logging(snakemake.log[0])
verdict = verdict_c7(pd.read_parquet(snakemake.input.summary), snakemake.params.verdict)
verdict.files = [snakemake.input.summary]
verdict.write(snakemake.output[0])
log.info("C7: %s. %s", verdict.verdict, verdict.summary)
