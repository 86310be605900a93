"""Figure e4_propagation: attention-only and full states against T_l, by depth."""

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from rankcollapse.io import setup_logging
from rankcollapse.plotting import save

log = setup_logging(snakemake.log[0])
p = snakemake.params
FLOOR = 1e-32
LINES = {
    ("attention_only", "reachable"): ("attention-only stack, outside T_l", "-"),
    ("full", "reachable"): ("full model, outside T_l", "--"),
    ("attention_only", "input_span"): (
        "attention-only stack, outside rowspace(X0)",
        ":",
    ),
}

prop = pd.concat(
    map(pd.read_parquet, [*snakemake.input.propagation, snakemake.input.deep]),
    ignore_index=True,
)
models = list(dict.fromkeys(prop["model"]))
colours = sns.color_palette("colorblind", 3)

fig, axes = plt.subplots(2, len(models), figsize=(4 * len(models), 6.5), squeeze=False)
for j, model in enumerate(models):
    g = prop[prop.model == model]
    d, n = int(g["d"].iloc[0]), int(g["n"].iloc[0])
    dims = (
        g[g.metric.isin(["dim", "bound", "ln_range_dim"])]
        .groupby(["layer", "metric"])["value"]
        .median()
        .unstack()
    )
    filled = dims.index[dims["dim"] >= dims["ln_range_dim"]]

    # Top: energy outside, median and range over sequences.
    ax = axes[0][j]
    for c, ((stack, sub), (label, ls)) in zip(colours, LINES.items(), strict=True):
        s = g[
            (g["stack"] == stack) & (g.subspace == sub) & (g.metric == "energy_outside")
        ]
        q = s.groupby("layer")["value"].agg(["min", "median", "max"]).clip(lower=FLOOR)
        ax.plot(q.index, q["median"], ls=ls, marker="o", color=c, label=label)
        ax.fill_between(q.index, q["min"], q["max"], color=c, alpha=0.2)
    ax.axhline(p.verdict["inside_max"], color="grey", ls=":", lw=0.8)
    ax.axhline(p.verdict["outside_min"], color="grey", ls="--", lw=0.8)
    if len(filled):  # from here on nothing can lie outside T_l
        ax.axvspan(
            filled[0] - 0.5,
            filled[0] + 0.5,
            color="grey",
            alpha=0.15,
            label="T_l = everything LN1 can output",
        )
    ax.set_yscale("log")
    ax.set_ylim(FLOOR / 10, 2)
    ax.set_title(f"{p.labels[model]}\n(H = {int(g['H'].iloc[0])}, n = {n})", fontsize=9)
    if j == 0:
        ax.set_ylabel("energy fraction outside")

    # Bottom: dim T_l against its bound and the LN range (d, or d - 1).
    ax = axes[1][j]
    ax.plot(dims.index, dims["dim"], marker="o", color="black", label="dim T_l")
    ax.plot(dims.index, dims["bound"], ls="--", color="grey", label="bound")
    ax.plot(
        dims.index,
        dims["ln_range_dim"],
        ls=":",
        color="black",
        lw=0.8,
        label=f"dim of the LN range (d = {d})",
    )
    ax.set_yscale("log", base=2)
    ax.set_xlabel("layer l")
    for a in axes[:, j]:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_xlim(0.5, dims.index.max() + 0.5)
    if j == 0:
        ax.set_ylabel("dimension")
axes[0][0].legend(fontsize=7, loc="center left")
axes[1][0].legend(fontsize=7)
fig.suptitle(
    "From X0 through an attention-only stack: states against T_l "
    "(median, band: min to max over sequences)",
    fontsize=10,
)
fig.tight_layout()
save(fig, snakemake.output.png)
log.info("figure written")
