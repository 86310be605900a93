"""Figure e9_training: training loss and held-out accuracy per width and seed."""

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from rankcollapse.io import setup_logging
from rankcollapse.plotting import save

log = setup_logging(snakemake.log[0])
hist = pd.concat(map(pd.read_parquet, snakemake.input.histories), ignore_index=True)
hist["d_ff"] = hist["multiple"].map(lambda m: f"{m}d")
order = [f"{m}d" for m in sorted(hist["multiple"].unique())]

# Training loss smoothed over a short window, per run.
train = hist[(hist.split == "train") & (hist.metric == "loss")].copy()
window = max(1, int(train["step"].max() // 20))
train["value"] = train.groupby(["multiple", "seed"])["value"].transform(
    lambda v: v.rolling(window, min_periods=1).mean()
)
held = hist[(hist.split == "eval") & (hist.metric == "accuracy")]

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
for ax, data, title in (
    (axes[0], train, f"training loss ({window}-step mean)"),
    (axes[1], held, "held-out accuracy"),
):
    sns.lineplot(
        data=data,
        x="step",
        y="value",
        hue="d_ff",
        hue_order=order,
        units="seed",
        estimator=None,
        ax=ax,
        lw=1,
        alpha=0.8,
        palette="viridis",
    )
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("")
fig.tight_layout()
save(fig, snakemake.output.png)
log.info("figure written")
