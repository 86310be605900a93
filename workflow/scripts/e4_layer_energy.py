"""E4 per model: energy of each layer's sites outside T(X), for short sequences."""

import pandas as pd
from tqdm import tqdm

from rankcollapse import corpus, models, reachable
from rankcollapse.io import setup_logging, write_parquet

log = setup_logging(snakemake.log[0])
models.set_determinism(snakemake.threads)
p = snakemake.params
name = snakemake.wildcards.model

model = models.load_model(p.model_dir, p.device)
tokenizer = models.load_tokenizer(p.model_dir)
cfg = model.config

# Every corpus sequence, then those short enough that T(X) stays below d.
seqs = corpus.tokenise(
    corpus.read_lines(p.corpus["path"]),
    tokenizer,
    {**p.corpus, "max_sequences": None},
    cfg.max_position_embeddings,
)
chosen, regime = reachable.regime(
    seqs, cfg.hidden_size, cfg.num_attention_heads, p.max_sequences
)
log.info(
    "%s: %d of %d sequences have n <= %d; analysing %d",
    name,
    regime["in_regime"],
    regime["corpus_sequences"],
    regime["n_max"],
    regime["analysed"],
)
if not chosen:
    raise SystemExit(
        f"{name}: no corpus sequence has n <= {regime['n_max']}; "
        "use shorter sentences or corpus.mode sentences"
    )

weights = reachable.model_weights(model)
with tqdm(total=len(chosen), desc=f"e4 {name}") as bar:
    energy = reachable.layer_energy_table(
        model, chosen, weights, p.corpus["batch_size"], p.basis_rtol, bar
    )
write_parquet(
    energy.assign(model=name, H=cfg.num_attention_heads), snakemake.output.energy
)
write_parquet(pd.DataFrame([dict(model=name, **regime)]), snakemake.output.regime)
log.info("wrote %d rows", len(energy))
