"""One arm of the from-scratch entropy-collapse run, every seed (E7)."""

import pandas as pd
import torch

from rankcollapse.entropy import TinyEncoderConfig, train_entropy_run
from rankcollapse.io import setup_logging, write_parquet

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
cfg = snakemake.params.cfg
arm = snakemake.params.arm

enc = TinyEncoderConfig(**cfg["model"], sigma_reparam=arm["sigma_reparam"])
frames = []
for seed in cfg["seeds"]:
    log.info(
        "arm %s, seed %d: lr %g, %s", snakemake.wildcards.arm, seed, arm["lr"], enc
    )
    frames.append(
        train_entropy_run(
            enc,
            arm["lr"],
            cfg["steps"],
            cfg["batch"],
            seed,
            cfg["log_every"],
            cfg["collapse_entropy"],
        )
    )
df = pd.concat(frames, ignore_index=True)
df.insert(0, "arm", snakemake.wildcards.arm)
df.insert(1, "lr", float(arm["lr"]))
df.insert(2, "sigma_reparam", bool(arm["sigma_reparam"]))
write_parquet(df, snakemake.output[0])
