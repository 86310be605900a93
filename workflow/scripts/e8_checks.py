"""Symmetry checks on every layer of one model, on real layer inputs (E8)."""

import torch

from rankcollapse import corpus, models
from rankcollapse.capture import run_and_capture
from rankcollapse.io import setup_logging, write_parquet
from rankcollapse.symmetry import CheckConfig, model_checks

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
cfg, ccfg = snakemake.params.cfg, snakemake.params.corpus

model = models.load_model(snakemake.params.model_dir, snakemake.params.device)
tokenizer = models.load_tokenizer(snakemake.params.model_dir)
seqs = corpus.tokenise(
    corpus.read_lines(ccfg.get("path")),
    tokenizer,
    ccfg,
    model.config.max_position_embeddings,
)
seqs = [s for s in seqs if s.n >= 2][: cfg["sequences"]]

# Real inputs of every layer, one sequence at a time (no padding).
n_layers = model.config.num_hidden_layers
xs = [[] for _ in range(n_layers)]
for s in seqs:
    ids = torch.tensor([s.input_ids])
    sites = run_and_capture(model, ids, torch.ones_like(ids), "blocks.*.in")[0]
    for layer in range(n_layers):
        xs[layer].append(sites[f"blocks.{layer}.in"])
log.info(
    "%s: %d layers, sequences of n = %s",
    snakemake.wildcards.model,
    n_layers,
    [s.n for s in seqs],
)

check_cfg = CheckConfig(
    gauge_condition=cfg["gauge_condition"],
    shift_std=cfg["shift_std"],
    gate_std=cfg["gate_std"],
    seed=cfg["seed"],
)
df = model_checks(model, xs, check_cfg)
df.insert(0, "model", snakemake.wildcards.model)
df.insert(len(df.columns) - 1, "metric", "rel_change")
write_parquet(df, snakemake.output[0])
