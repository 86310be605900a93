"""The E3 tables: real-site counts, matrix-form check, LayerNorm parameters,
synthetic ranks, F5 singular values and slopes."""

import pandas as pd

from rankcollapse import layernorm
from rankcollapse.io import setup_logging, write_csv

log = setup_logging(snakemake.log[0])
inp, out = snakemake.input, snakemake.output

ranks = pd.concat(map(pd.read_parquet, inp.ranks), ignore_index=True)
synthetic = pd.concat(map(pd.read_parquet, inp.synthetic), ignore_index=True)

write_csv(layernorm.count_changes(ranks), out.counts)
write_csv(layernorm.form_check(ranks), out.matrix_form)
write_csv(pd.concat(map(pd.read_parquet, inp.ln_params)), out.ln_params)
write_csv(layernorm.synthetic_table(synthetic), out.synthetic)
write_csv(layernorm.f5_table(synthetic), out.f5)
write_csv(layernorm.f5_slopes(synthetic, snakemake.params.slope_floor), out.slopes)
log.info("E3 tables written")
