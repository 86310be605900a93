"""E2: a weight set that collapses X exactly, perturbed by eps * G."""

import pandas as pd
import torch

from rankcollapse.genericity import (
    eps_grid,
    exceptional_trials,
    stack_shape,
    trial_inputs,
)
from rankcollapse.io import setup_logging, write_parquet
from rankcollapse.models import set_determinism

log = setup_logging(snakemake.log[0])
set_determinism(threads=snakemake.threads)
cfg, ex = snakemake.params.e2, snakemake.params.e2["exceptional"]

shape = stack_shape(snakemake.params.model_dir)
embeddings = torch.load(snakemake.input.inputs)["embeddings"]
inputs = trial_inputs(cfg["inputs"], embeddings, 1, cfg["seed"])
grid = eps_grid(ex["eps_exponents"], ex["eps_per_decade"])

frames = []
for name, x in inputs.items():
    log.info(
        "%s: X = %s input 0, %d eps values", snakemake.wildcards.model, name, len(grid)
    )
    df = exceptional_trials(
        x[0],
        shape,
        qk_std=ex["qk_scale"] * shape.init_std,
        eps_grid=grid,
        draws=ex["draws"],
        seed=cfg["seed"],
        rtols=snakemake.params.rtols,
    )
    df.insert(0, "input", name)
    frames.append(df)
df = pd.concat(frames, ignore_index=True)
df.insert(0, "model", snakemake.wildcards.model)
write_parquet(df, snakemake.output[0])
