"""Ranks of the input and output of every LayerNorm of one model (E3, claim C1)."""

import pandas as pd
import torch

from rankcollapse import corpus, layernorm, models
from rankcollapse.io import setup_logging, write_parquet

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
e3 = snakemake.params.e3
name = snakemake.wildcards.model

# the model, its tokenizer and the corpus sequences
model = models.load_model(snakemake.params.model_dir, snakemake.params.device)
tokenizer = models.load_tokenizer(snakemake.params.model_dir)
max_positions = model.config.max_position_embeddings
lines = corpus.read_lines(snakemake.params.corpus.get("path"))
seqs = corpus.tokenise(lines, tokenizer, snakemake.params.corpus, max_positions)
batch_size = snakemake.params.corpus["batch_size"]
pad_id = tokenizer.pad_token_id or 0
log.info("%s: %d corpus sequences, d = %d", name, len(seqs), model.config.hidden_size)

# every LayerNorm on the corpus
ranks, spectra = layernorm.real_site_ranks(
    model,
    name,
    seqs,
    batch_size,
    snakemake.params.rtols,
    "corpus",
    e3["spectra_sequences"],
    pad_id,
)

# and on long sequences cut from the corpus stream (n > d where positions allow)
long_cfg = e3["long_sequences"]
if long_cfg["count"] > 0:
    length = min(long_cfg["length"], max_positions)
    long_seqs = corpus.tokenise(
        lines,
        tokenizer,
        {
            "mode": "fixed_length",
            "fixed_length": length,
            "special_tokens": True,
            "max_sequences": long_cfg["count"],
        },
        max_positions,
    )
    log.info("%s: %d long sequences of n = %d", name, len(long_seqs), length)
    long_ranks, long_spectra = layernorm.real_site_ranks(
        model,
        name,
        long_seqs,
        1,
        snakemake.params.rtols,
        "long",
        -1,
        pad_id,
    )
    ranks = pd.concat([ranks, long_ranks], ignore_index=True)
    spectra = pd.concat([spectra, long_spectra], ignore_index=True)

params = layernorm.ln_params(model, name, e3["gamma_zero_rtol"])
write_parquet(ranks, snakemake.output.ranks)
write_parquet(spectra, snakemake.output.spectra)
write_parquet(params, snakemake.output.ln_params)
log.info(
    "largest |captured - matrix form|: %.3g",
    ranks[ranks.metric == "form_err"].value.max(),
)
