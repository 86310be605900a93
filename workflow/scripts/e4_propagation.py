"""E4: T propagated from X0 through the attention-only stack, against its states
and the full model's; for a catalogue model or the configured deep random one."""

import pandas as pd
import torch
from tqdm import tqdm

from rankcollapse import corpus, models, reachable
from rankcollapse.io import setup_logging, write_parquet

log = setup_logging(snakemake.log[0])
models.set_determinism(snakemake.threads)
p = snakemake.params

# The model: fetched, or the deep random configuration drawn in memory.
if p.random is None:
    name = snakemake.wildcards.model
    model = models.load_model(p.model_dir, p.device)
else:
    name = "deep-random"
    model = reachable.random_encoder(p.random["architecture"], p.random["seed"])
    model = model.to(models.resolve_device(p.device))
tokenizer = models.load_tokenizer(p.tokenizer_dir)

# Short sequences cut from the corpus token stream.
seqs = corpus.tokenise(
    corpus.read_lines(p.corpus["path"]),
    tokenizer,
    {
        **p.corpus,
        "mode": "fixed_length",
        "fixed_length": p.propagation["length"],
        "max_sequences": p.propagation["sequences"],
    },
    model.config.max_position_embeddings,
)

weights = reachable.model_weights(model)
range_dims = [reachable.ln_range(w, p.basis_rtol).shape[1] for w in weights]
rows = []
for s in tqdm(seqs, desc=f"e4 propagation {name}"):
    ids = torch.tensor(s.input_ids)
    for row in reachable.propagation_rows(
        model, ids, weights, p.basis_rtol, range_dims
    ):
        rows.append(
            dict(model=name, seq=s.seq_id, H=model.config.num_attention_heads, **row)
        )
table = pd.DataFrame(rows)
dims = table[table.metric == "dim"].groupby("layer")["value"].median()
log.info("%s: median dim T_l by layer %s", name, dims.to_dict())
write_parquet(table, snakemake.output[0])
