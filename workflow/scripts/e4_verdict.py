"""Verdict C3 from E4's per-layer energies, propagation and regime tables."""

import pandas as pd

from rankcollapse.io import setup_logging
from rankcollapse.reachable import verdict_c3

log = setup_logging(snakemake.log[0])
inp = snakemake.input

energy = pd.concat(map(pd.read_parquet, inp.energy), ignore_index=True)
regime = pd.concat(map(pd.read_parquet, inp.regime), ignore_index=True)
propagation = pd.concat(
    map(pd.read_parquet, [*inp.propagation, inp.deep]), ignore_index=True
)

verdict = verdict_c3(energy, propagation, regime, snakemake.params.verdict)
verdict.files = [*inp.energy, *inp.regime, *inp.propagation, inp.deep]
verdict.write(snakemake.output[0])
log.info("C3: %s. %s", verdict.verdict, verdict.summary)
