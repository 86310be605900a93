"""E6 training results across runs: the long training log, gate profiles,
identifiability, each run's scores and their summary across seeds."""

import pandas as pd

from rankcollapse import pgop_train
from rankcollapse.io import setup_logging, write_csv, write_parquet

log = setup_logging(snakemake.log[0])
inp, out = snakemake.input, snakemake.output


def concat(paths):
    return pd.concat(map(pd.read_parquet, paths), ignore_index=True)


training_log = concat(inp.logs)
write_parquet(training_log, out.training_log)
write_parquet(concat(inp.gates), out.gate_profiles)

# Scores per run and their summary across seeds.
scores = pgop_train.run_scores(training_log, snakemake.params.scores)
summary = pgop_train.score_summary(scores, snakemake.params.noise_k)
log.info("scores across seeds:\n%s", summary.to_string())
write_csv(scores, out.scores)
write_csv(summary, out.summary)

# Identifiability: per run, and per (task, arm, layer) over seeds for the book.
ident = concat(inp.identifiability)
write_parquet(ident, out.identifiability)
keys = ["task", "arm", "layer", "n", "H", "d_k", "free_dirs_vanilla"]
agg = (
    ident.groupby(keys, sort=False)
    .agg(
        seeds=("seed", "nunique"),
        rank_G_min=("rank_G", "min"),
        rank_G_max=("rank_G", "max"),
        rank_G_exact_min=("rank_G_exact", "min"),
        free_dirs_formula_max=("free_dirs_formula", "max"),
        kernel_min=("kernel_min", "min"),
        kernel_max=("kernel_max", "max"),
        free_dirs_formula_exact_max=("free_dirs_formula_exact", "max"),
        kernel_exact_min=("kernel_exact_min", "min"),
        kernel_exact_max=("kernel_exact_max", "max"),
        sigma2_ratio_G_median=("sigma2_ratio_G", "median"),
    )
    .reset_index()
)
write_csv(agg, out.identifiability_table)

# Training time of each run (seconds of the training loop, from its log).
times = (
    training_log[training_log["metric"] == "elapsed_s"]
    .groupby(["task", "arm", "seed"])["value"]
    .max()
    .rename("train_seconds")
    .reset_index()
)
log.info("training seconds:\n%s", times.to_string())
write_csv(times, out.run_times)
