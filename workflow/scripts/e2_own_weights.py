"""E2: the model's own attention sub-blocks (no MLP) over the corpus."""

from rankcollapse import corpus
from rankcollapse.genericity import own_weight_trials
from rankcollapse.io import setup_logging, write_parquet
from rankcollapse.models import load_model, load_tokenizer, provenance, set_determinism

log = setup_logging(snakemake.log[0])
set_determinism(threads=snakemake.threads)
p, model_name = snakemake.params, snakemake.wildcards.model

model = load_model(p.model_dir, p.device)
tokenizer = load_tokenizer(p.model_dir)
lines = corpus.read_lines(p.corpus["path"])
seqs = corpus.tokenise(lines, tokenizer, p.corpus, model.config.max_position_embeddings)
log.info("%s: %d sequences", model_name, len(seqs))

df = own_weight_trials(model, seqs, p.corpus["batch_size"], p.rtols)
df.insert(0, "init", provenance(p.model_dir).get("init", "unknown"))
df.insert(0, "model", model_name)
write_parquet(df, snakemake.output[0])
log.info("%d rows written", len(df))
