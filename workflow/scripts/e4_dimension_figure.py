"""Figure e4_dimension: dim T(X) against the sequence length n, with its bounds."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from rankcollapse.io import setup_logging
from rankcollapse.plotting import save
from rankcollapse.reachable import dim_bound

log = setup_logging(snakemake.log[0])
labels = snakemake.params.labels

energy = pd.concat(map(pd.read_parquet, snakemake.input.energy), ignore_index=True)
dims = energy[energy.metric == "dim"]
models = list(dict.fromkeys(dims["model"]))
colours = dict(
    zip(
        ("input_span", "affine", "linear"),
        sns.color_palette("colorblind", 3),
        strict=True,
    )
)

fig, axes = plt.subplots(
    1, len(models), figsize=(4.5 * len(models), 3.8), squeeze=False
)
for ax, model in zip(axes[0], models, strict=True):
    g = dims[dims.model == model]
    d, heads = int(g["d"].iloc[0]), int(g["H"].iloc[0])
    n = np.arange(2, g["n"].max() + 2)
    for sub, label in (
        ("input_span", "rank X"),
        ("affine", "dim T(X), affine"),
        ("linear", "dim T(X), linear"),
    ):
        s = g[g.subspace == sub]
        ax.scatter(s["n"], s["value"], s=12, color=colours[sub], label=label, alpha=0.6)
    ax.plot(
        n,
        [dim_bound(k, heads, "linear") for k in n],
        color=colours["linear"],
        lw=0.8,
        label="n(H+1)+2",
    )
    ax.plot(
        n,
        [dim_bound(k, heads, "affine") for k in n],
        color=colours["affine"],
        lw=0.8,
        ls="--",
        label="(n-1)(H+1)+2",
    )
    ax.axhline(d, color="black", lw=0.8, ls=":", label=f"d = {d}")
    ax.set_title(f"{labels[model]} (H = {heads})", fontsize=9)
    ax.set_xlabel("sequence length n")
    ax.set_ylabel("dimension")
axes[0][0].legend(fontsize=7)
fig.tight_layout()
save(fig, snakemake.output.png)
log.info("figure written")
