"""E1 across models: summary tables, the depth figures and C2's depth verdict."""

import numpy as np
import pandas as pd

from rankcollapse import depth, plotting
from rankcollapse.io import setup_logging, write_csv, write_parquet

log = setup_logging(snakemake.log[0])
p = snakemake.params
frames = [pd.read_parquet(f) for f in snakemake.input.depth]
data = pd.concat(frames, ignore_index=True)
data["model"] = data["model"].map(p.labels)
order = [
    v
    for v in (*depth.VARIANTS, *(f"dong:{s}" for s in depth.DONG_SURGERIES))
    if v in set(data.variant)
]

# Summary over sequences, and the deepest layer per model and variant.
summary = depth.summarise(data)
last = depth.last_layer(summary, p.collapse_ratio)
checks = pd.concat([pd.read_parquet(f) for f in snakemake.input.checks])
checks = checks.groupby(["model", "check"], as_index=False)["max_abs_diff"].max()
write_parquet(summary, snakemake.output.summary)
write_csv(last, snakemake.output.last)
write_csv(checks, snakemake.output.checks)

# Residual ratio and affine rank against depth, our variants only.
ours = summary[summary.variant.isin(depth.VARIANTS)]
hue = [v for v in depth.VARIANTS if v in set(ours.variant)]
for metric, out, label, logy in (
    ("res_ratio", snakemake.output.residual, "residual ratio (composite norm)", True),
    ("affine_rank", snakemake.output.rank, "affine rank", False),
):
    g = plotting.band_plot(
        ours[ours.metric == metric],
        x="layer",
        hue="variant",
        col="model",
        row=None,
        ylabel=label,
        logy=logy,
        hue_order=hue,
    )
    plotting.save(g.figure, out)

# Doubly exponential decay: log(-log ratio) against depth, per sequence then median.
pure = data[(data.metric == "res_ratio") & data.variant.isin(["attn", "attn+ln"])]
pure = pure[(pure.value > 0) & (pure.value < 1)].copy()
pure["loglog"] = np.log(-np.log(pure.value))
g = pure.groupby(["model", "variant", "layer"])["loglog"]
loglog = g.median().rename("median").to_frame()
loglog["q25"], loglog["q75"] = g.quantile(0.25), g.quantile(0.75)
fg = plotting.band_plot(
    loglog.reset_index(),
    x="layer",
    hue="variant",
    col="model",
    row=None,
    ylabel="log(-log residual ratio)",
)
plotting.save(fg.figure, snakemake.output.loglog)

# C2's evidence from depth.
files = [snakemake.output.last, snakemake.output.checks]
depth.verdict_c2_depth(last, checks, files).write(snakemake.output.verdict)
log.info("last layer:\n%s", last.to_string())
