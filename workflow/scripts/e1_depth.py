"""E1 for one model: every variant's metrics at every depth, over the corpus."""

import pandas as pd
import torch
from tqdm import tqdm

from rankcollapse import corpus, depth, models
from rankcollapse.io import ParquetAppender, setup_logging, write_parquet

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p = snakemake.params
model_path = snakemake.input.provenance.rsplit("/", 1)[0]
prov = models.provenance(model_path)

# The model, drawn deeper when it is a random initialisation.
model = models.load_model(model_path, p.device)
if prov["init"] == "random" and p.e1["random_depth"] > model.config.num_hidden_layers:
    model = models.deeper_random(model_path, p.e1["random_depth"], p.device)
log.info(
    "%s: %d layers, init %s", p.model, model.config.num_hidden_layers, prov["init"]
)

# The corpus in this model's tokens.
tokenizer = models.load_tokenizer(model_path)
seqs = corpus.tokenise(
    corpus.read_lines(p.corpus.get("path")),
    tokenizer,
    p.corpus,
    model.config.max_position_embeddings,
)
surgeries = {f"dong:{s}": depth.dong_surgery(model, s) for s in p.e1["dong_surgeries"]}
same_as = {
    "dong:san": "attn+ln",
    "dong:san+mlp": "attn+mlp",
    "dong:san+skip": "attn+res+ln",
}

n_spectra = p.e1["spectra_sequences"]
checks, n_rows = [], 0
with (
    ParquetAppender(snakemake.output.depth) as depth_out,
    ParquetAppender(snakemake.output.spectra) as spectra_out,
):
    for seq_ids, ids, mask in tqdm(
        list(corpus.batches(seqs, p.corpus["batch_size"])), desc=f"E1 {p.model}"
    ):
        lengths = mask.sum(1).tolist()
        states = {v: depth.run_variant(model, ids, mask, v) for v in p.e1["variants"]}
        states |= {s: depth.run_library(m, ids, mask) for s, m in surgeries.items()}
        library = depth.run_library(model, ids, mask)

        # Checks: `full` against the library, each surgery against its rewiring.
        comparisons = {"full vs library": (states.get("full"), library)}
        for surgery, variant in same_as.items():
            if surgery in states and variant in states:
                comparisons[f"{variant} vs {surgery}"] = (
                    states[variant],
                    states[surgery],
                )
        for check, (ours, ref) in comparisons.items():
            if ours is None:
                continue
            for b, n in enumerate(lengths):
                diff = (ours[:, b, :n] - ref[:, b, :n]).abs().max().item()
                checks.append(
                    {
                        "model": p.model,
                        "seq_id": seq_ids[b],
                        "check": check,
                        "max_abs_diff": diff,
                    }
                )

        # Metrics of every variant at every depth, written batch by batch.
        keep = [b for b, s in enumerate(seq_ids) if s < n_spectra]
        for variant, st in states.items():
            keys = {"model": p.model, "init": prov["init"], "variant": variant}
            rows = depth.depth_rows(st, lengths, seq_ids, keys, p.rtols)
            depth_out.append(rows)
            n_rows += len(rows)
            if keep:
                spectra_out.append(
                    depth.spectrum_rows(
                        st[:, keep],
                        [lengths[b] for b in keep],
                        [seq_ids[b] for b in keep],
                        keys,
                    )
                )

write_parquet(pd.DataFrame(checks), snakemake.output.checks)
log.info(
    "%d rows; largest check difference %.3g",
    n_rows,
    max(c["max_abs_diff"] for c in checks),
)
