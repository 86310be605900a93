"""E6 checks on one model: PG-OP equals it at initialisation, survives save and
reload, breaks the head permutation and keeps the per-head gauge."""

import pandas as pd

from rankcollapse import corpus, models, pgop
from rankcollapse.io import setup_logging, write_parquet

log = setup_logging(snakemake.log[0])
models.set_determinism(threads=snakemake.threads)
p = snakemake.params
model = snakemake.wildcards.model

tokenizer = models.load_tokenizer(p.model_dir)
max_positions = models.load_model(p.model_dir, "cpu").config.max_position_embeddings
seqs = corpus.tokenise(
    corpus.read_lines(p.corpus["path"]), tokenizer, p.corpus, max_positions
)[: p.checks["max_sequences"]]
_, ids, mask = next(corpus.batches(seqs, len(seqs), tokenizer.pad_token_id or 0))

values = pgop.model_checks(
    p.model_dir,
    ids,
    mask,
    p.pgop,
    p.checks["gate_logit_std"],
    p.checks["gauge_cond"],
    p.checks["seed"],
    p.device,
)
log.info("%s: %s", model, values)
write_parquet(
    pd.DataFrame(
        {"model": model, "metric": list(values), "value": list(values.values())}
    ),
    snakemake.output[0],
)
