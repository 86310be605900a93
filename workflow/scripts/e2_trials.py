"""E2: K Gaussian weight draws of attention + residual stacks at one scale."""

import torch

from rankcollapse.genericity import random_trials, stack_shape, trial_inputs
from rankcollapse.io import setup_logging, write_parquet
from rankcollapse.models import resolve_device, set_determinism

log = setup_logging(snakemake.log[0])
set_determinism(threads=snakemake.threads)
cfg, model = snakemake.params.e2, snakemake.wildcards.model
scale = float(snakemake.wildcards.scale)

shape = stack_shape(snakemake.params.model_dir)
embeddings = torch.load(snakemake.input.inputs)["embeddings"]
inputs = trial_inputs(cfg["inputs"], embeddings, cfg["draws"], cfg["seed"])
log.info("%s, scale x%g: %s, %d draws", model, scale, shape, cfg["draws"])

df = random_trials(
    inputs,
    shape,
    scale,
    draws=cfg["draws"],
    n_layers=cfg["layers"] or shape.n_layers,
    chunk=cfg["chunk"],
    seed=cfg["seed"],
    rtols=snakemake.params.rtols,
    dtype=getattr(torch, cfg["dtype"]),
    device=resolve_device(snakemake.params.device),
)
df.insert(0, "model", model)
write_parquet(df, snakemake.output[0])
log.info("%d rows written", len(df))
