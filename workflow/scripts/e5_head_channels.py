"""E5 on one model: reading A and reading B on its weights, the recovery of
captured head outputs, and the head symmetries with the MLP on real text.

Only the capture runs on the configured device; the analysis is float64 linear
algebra on the CPU, where the model is moved after the capture.
"""

from tqdm import tqdm

from rankcollapse import heads
from rankcollapse.io import setup_logging, write_parquet
from rankcollapse.models import layer_weights, load_model, load_tokenizer

log = setup_logging(snakemake.log[0])
name, cfg, out = snakemake.wildcards.model, snakemake.params.cfg, snakemake.output
rtols = snakemake.params.rtols

# Real text: one capture serves the recovery and the symmetry checks.
model = load_model(snakemake.params.path, snakemake.params.device)
count = max(cfg["sequences"], cfg["symmetry_sequences"])
seqs = heads.captured_sequences(
    model, load_tokenizer(snakemake.params.path), snakemake.params.corpus, count
)
log.info("%s: captured %d sequences", name, len(seqs))
model = model.cpu()
weights = [layer_weights(layer) for layer in model.encoder.layer]

# Reading A: the kernel of z -> o R for every layer, reader and n.
kernel, reader_spectra = heads.reading_a(weights, name, cfg, rtols)
write_parquet(kernel, out.kernel)
write_parquet(reader_spectra, out.reader_spectra)
log.info(
    "%s: reading A, %d readers",
    name,
    reader_spectra.groupby(["layer", "reader", "reader_head"]).ngroups,
)

# Reading B: W_O per layer, and what comes back of the captured head outputs.
w_o, w_o_spectra = heads.reading_b(weights, name, cfg, rtols)
write_parquet(w_o, out.w_o)
write_parquet(w_o_spectra, out.w_o_spectra)
log.info(
    "%s: cond(W_O) per layer %s",
    name,
    w_o.query("metric == 'cond'")["value"].round(1).tolist(),
)
write_parquet(
    heads.recovery(weights, seqs[: cfg["sequences"]], name, cfg), out.recovery
)

# The head symmetries and the MLP, layer by layer.
sym, mlp = heads.symmetries(
    model,
    seqs[: cfg["symmetry_sequences"]],
    name,
    cfg,
    progress=lambda it: tqdm(it, desc=f"E5 symmetries {name}"),
)
write_parquet(sym, out.symmetry)
write_parquet(mlp, out.mlp)
log.info(
    "%s: worst float64 output change under the symmetries %.3g",
    name,
    sym.query("metric == 'out_rel_err' and dtype == 'float64'")["value"].max(),
)
