"""E6 figure: training curves of vanilla and PG-OP, mean and one standard deviation
over seeds; columns are tasks, rows are metrics."""

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from rankcollapse import plotting
from rankcollapse.io import setup_logging

log = setup_logging(snakemake.log[0])
METRICS = {
    "eval_accuracy": "eval accuracy",
    "eval_loss": "eval loss",
    "attn_entropy_norm": "attention entropy / log(keys)",
    "perm_sensitivity": "head-permutation sensitivity",
    "gate_std": "std of gates",
}

df = pd.read_parquet(snakemake.input[0])
df = df[(df["layer"] == -1) & df["metric"].isin(list(METRICS))]
tasks = list(dict.fromkeys(df["task"]))

fig, axes = plt.subplots(
    len(METRICS),
    len(tasks),
    figsize=(4.2 * len(tasks), 11),
    sharex="col",
    squeeze=False,
)
for col, task in enumerate(tasks):
    for row, (metric, label) in enumerate(METRICS.items()):
        ax = axes[row, col]
        sel = df[(df["task"] == task) & (df["metric"] == metric)]
        sns.lineplot(
            sel,
            x="step",
            y="value",
            hue="arm",
            hue_order=["vanilla", "pgop"],
            errorbar="sd",
            ax=ax,
            legend=(row == 0 and col == 0),
        )
        if metric == "perm_sensitivity":
            ax.set_yscale("symlog", linthresh=1e-6)  # vanilla sits at round-off
            ax.set_ylim(bottom=0)
        ax.set_ylabel(label if col == 0 else "")
        if row == 0:
            ax.set_title(task)
fig.tight_layout()
plotting.save(fig, snakemake.output.png)
log.info("wrote %s", snakemake.output.png)
