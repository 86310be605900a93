"""E6 figure: the trained gates g_ih against position i, one line per head, one
panel per (task, layer), at the last step of the first seed."""

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from rankcollapse import plotting
from rankcollapse.io import setup_logging

log = setup_logging(snakemake.log[0])
df = pd.read_parquet(snakemake.input[0])
df = df[df["seed"] == df["seed"].min()]
df = df[df["step"] == df.groupby("task")["step"].transform("max")]
tasks = list(dict.fromkeys(df["task"]))
n_layers = int(df["layer"].max()) + 1

fig, axes = plt.subplots(
    len(tasks),
    n_layers,
    figsize=(2.6 * n_layers, 2.6 * len(tasks)),
    sharey=True,
    squeeze=False,
)
for row, task in enumerate(tasks):
    sel = df[df["task"] == task]
    for layer in range(n_layers):
        ax = axes[row, layer]
        part = sel[sel["layer"] == layer]
        if part.empty:
            ax.set_axis_off()
            continue
        sns.lineplot(
            part,
            x="position",
            y="gate",
            hue="head",
            palette="tab20",
            legend=False,
            ax=ax,
            linewidth=1,
        )
        ax.axhline(1.0, color="grey", lw=0.5, ls=":")
        ax.set_title(f"{task}, layer {layer}", fontsize=9)
        ax.set_ylabel("gate $g_{ih}$" if layer == 0 else "")
fig.tight_layout()
plotting.save(fig, snakemake.output.png)
log.info("wrote %s", snakemake.output.png)
