"""C2 verdict from the E2 tables and, when this run built E1, its last-layer table."""

import pandas as pd

from rankcollapse.genericity import verdict_c2
from rankcollapse.io import setup_logging

log = setup_logging(snakemake.log[0])
inp = snakemake.input

e1 = pd.read_csv(inp.e1[0]) if inp.e1 else None
v = verdict_c2(
    pd.read_csv(inp.trials),
    pd.read_csv(inp.own),
    pd.read_csv(inp.exceptional),
    e1,
    files=[inp.trials, inp.own, inp.exceptional, *inp.e1],
)
v.write(snakemake.output[0])
log.info("C2: %s. %s", v.verdict, v.summary)
