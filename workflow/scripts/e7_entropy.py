"""Attention entropy of every head and layer of one model over the corpus (E7)."""

import torch

from rankcollapse import corpus, models
from rankcollapse.entropy import model_entropy
from rankcollapse.io import setup_logging, write_parquet

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
ccfg = snakemake.params.corpus

model = models.load_model(snakemake.params.model_dir, snakemake.params.device)
tokenizer = models.load_tokenizer(snakemake.params.model_dir)
seqs = corpus.tokenise(
    corpus.read_lines(ccfg.get("path")),
    tokenizer,
    ccfg,
    model.config.max_position_embeddings,
)
log.info("%s: %d sequences", snakemake.wildcards.model, len(seqs))

df = model_entropy(model, seqs, ccfg["batch_size"], tokenizer.pad_token_id or 0)
df.insert(0, "model", snakemake.wildcards.model)
write_parquet(df, snakemake.output[0])
