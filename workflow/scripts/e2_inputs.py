"""E2: X0 (embed.out) of fixed-length pieces of the corpus, the real inputs."""

import os
from pathlib import Path

import torch

from rankcollapse import corpus
from rankcollapse.genericity import embedding_inputs
from rankcollapse.io import setup_logging
from rankcollapse.models import load_model, load_tokenizer, set_determinism

log = setup_logging(snakemake.log[0])
set_determinism(threads=snakemake.threads)
p = snakemake.params

model = load_model(p.model_dir, p.device)
tokenizer = load_tokenizer(p.model_dir)
lines = corpus.read_lines(p.corpus["path"])
x = embedding_inputs(model, tokenizer, lines, p.corpus, p.n_tokens, p.sequences)
log.info("%s: %d inputs of shape %s", snakemake.wildcards.model, len(x), x.shape[1:])

# Written through a temporary file, like rankcollapse.io's writers.
out = Path(snakemake.output[0])
tmp = out.with_name(f".{out.name}.tmp")
torch.save({"embeddings": x}, tmp)
os.replace(tmp, out)
