"""E6: train one (task, arm, seed) and write its log, gate profiles and
identifiability count."""

from rankcollapse import corpus, models, pgop_train
from rankcollapse.io import setup_logging, write_parquet

log = setup_logging(snakemake.log[0])
models.set_determinism(threads=snakemake.threads)
p, wc = snakemake.params, snakemake.wildcards

lines = corpus.read_lines(p.corpus_path) if wc.task == "word_order" else None
task = pgop_train.build_task(wc.task, p.task, p.model_dir, lines)
tables = pgop_train.train_run(
    wc.task,
    task,
    wc.arm,
    int(wc.seed),
    p.task,
    p.pgop,
    models.resolve_device(p.device),
    p.log_every,
    p.identifiability["positions"],
    p.identifiability["rank_rtol"],
)
for name, df in tables.items():
    write_parquet(df, snakemake.output[name])
