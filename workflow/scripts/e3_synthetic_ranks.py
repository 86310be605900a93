"""Ranks of synthetic token sets before and after LayerNorm at one d (E3)."""

import torch

from rankcollapse import layernorm
from rankcollapse.io import setup_logging, write_parquet

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
d = int(snakemake.wildcards.d)

table = layernorm.synthetic_ranks(d, snakemake.params.e3, snakemake.params.rtols)
write_parquet(table, snakemake.output[0])
log.info("d = %d: %d rows", d, len(table))
