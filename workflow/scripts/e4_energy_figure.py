"""Figure e4_energy: energy outside each subspace by layer, per model and site."""

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from rankcollapse.io import setup_logging
from rankcollapse.plotting import save

log = setup_logging(snakemake.log[0])
p = snakemake.params
FLOOR = 1e-32  # energies below this (exact zeros included) are drawn at the floor
ROWS = {
    "input_span": "outside rowspace(X)",
    "affine": "outside T(X), affine (tight)",
    "linear": "outside T(X), linear (spec)",
}
SITES = {
    "attn_block": "attention sub-block  LN1(X+MHA(X))",
    "mlp": "MLP output",
    "layer": "layer output",
}

energy = pd.concat(map(pd.read_parquet, snakemake.input.energy), ignore_index=True)
e = energy[energy.metric == "energy_outside"].copy()
e["value"] = e["value"].clip(lower=FLOOR)
models = list(dict.fromkeys(e["model"]))
colours = dict(zip(SITES, sns.color_palette("colorblind", len(SITES)), strict=True))

fig, axes = plt.subplots(
    len(ROWS), len(models), figsize=(4.2 * len(models), 8.5), sharey=True, squeeze=False
)
for j, model in enumerate(models):
    for i, (sub, title) in enumerate(ROWS.items()):
        ax = axes[i][j]
        for site, label in SITES.items():
            g = e[(e.model == model) & (e.subspace == sub) & (e.site == site)]
            q = g.groupby("layer")["value"].quantile([0.25, 0.5, 0.75]).unstack()
            ax.plot(q.index, q[0.5], marker="o", color=colours[site], label=label)
            ax.fill_between(q.index, q[0.25], q[0.75], color=colours[site], alpha=0.25)
        for level, ls in (
            (p.verdict["inside_max"], ":"),
            (p.verdict["outside_min"], "--"),
        ):
            ax.axhline(level, color="grey", ls=ls, lw=0.8)
        ax.set_yscale("log")
        ax.set_ylim(FLOOR / 10, 2)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{p.labels[model]}\n{title}" if i == 0 else title, fontsize=9)
        ax.set_xlabel("layer" if i == len(ROWS) - 1 else "")
        if j == 0:
            ax.set_ylabel("energy fraction outside")
axes[0][0].legend(fontsize=7, loc="lower right")
fig.suptitle(
    "Energy outside the attention-reachable subspace: median and "
    "interquartile band over sequences\n(dotted: round-off bound "
    "inside_max; dashed: outside_min)",
    fontsize=10,
)
fig.tight_layout()
save(fig, snakemake.output.png)
log.info("figure written")
