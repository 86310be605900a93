"""E9: train one encoder with d_ff = m d from scratch; measure before and after."""

from tqdm import tqdm

from rankcollapse import ffn_width, models
from rankcollapse.io import setup_logging, write_parquet

log = setup_logging(snakemake.log[0])
models.set_determinism(snakemake.threads)
p = snakemake.params
multiple, seed = int(snakemake.wildcards.multiple), int(snakemake.wildcards.seed)
device = models.resolve_device(p.device)

tokenizer = None
if p.task["source"] == "corpus":
    tokenizer = models.load_tokenizer(p.tokenizer_dir)
task = ffn_width.build_task(p.task, tokenizer)
log.info(
    "task %s: %d train and %d held-out sequences of %d tokens, vocab %d",
    p.task["source"],
    len(task.train_ids),
    len(task.eval_ids),
    task.seq_len,
    task.vocab_size,
)

with tqdm(total=p.train["steps"], desc=f"e9 d_ff={multiple}d seed {seed}") as bar:
    metrics, history = ffn_width.run(
        multiple,
        seed,
        p.model,
        p.train,
        task,
        p.measure_sequences,
        device,
        p.basis_rtol,
        bar,
    )

keys = dict(multiple=multiple, seed=seed, d=p.model["d"], d_ff=multiple * p.model["d"])
write_parquet(metrics.assign(**keys), snakemake.output.metrics)
write_parquet(history.assign(**keys), snakemake.output.history)
scores = metrics[metrics.metric == "accuracy"].set_index("phase")["value"]
log.info("held-out accuracy: %s", scores.round(4).to_dict())
