"""Rank collapse in width with one model's shapes (experiment E7)."""

import torch
from transformers import AutoConfig

from rankcollapse.io import setup_logging, write_parquet
from rankcollapse.width import AttentionShape, log_spaced, width_sweep

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
cfg = snakemake.params.cfg

config = AutoConfig.from_pretrained(snakemake.params.model_dir)
shape = AttentionShape.from_config(config)
ns = log_spaced(cfg["n_min"], cfg["n_max"], cfg["n_points"])
log.info("%s: d=%d, d_k=%d, n in %s", snakemake.wildcards.model, shape.d, shape.d_k, ns)

df = width_sweep(
    shape,
    ns,
    cfg["draws"],
    cfg["weight_inits"],
    cfg["logits"],
    seed=cfg["seed"],
    full_max_n=cfg["full_svd_max_n"],
)
df.insert(0, "model", snakemake.wildcards.model)
write_parquet(df, snakemake.output[0])
log.info("%d rows written", len(df))
