"""Figure e9_ffn_width: task score, energy outside T and ranks against d_ff / d."""

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from rankcollapse.io import setup_logging
from rankcollapse.plotting import save

log = setup_logging(snakemake.log[0])
p = snakemake.params
PANELS = {
    "accuracy": ("held-out masked-token accuracy", "linear"),
    "final_effective_rank": ("effective rank, last layer", "linear"),
    "affine_rank_kept": ("share of layers keeping affine rank", "linear"),
    "mlp_energy_outside": ("MLP output: energy outside T(X)", "log"),
    "layer_energy_outside": ("layer output: energy outside T(X)", "log"),
    "attn_block_energy_outside": ("attention sub-block: energy outside T(X)", "log"),
}
PHASES = {
    "init": ("at initialisation", "tab:grey"),
    "trained": ("after training", "tab:blue"),
}

summary = pd.read_parquet(snakemake.input.summary)
multiples = sorted(summary["multiple"].unique())
fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
for ax, (q, (title, scale)) in zip(axes.flat, PANELS.items(), strict=True):
    g = summary[summary.quantity == q]
    for phase, (label, colour) in PHASES.items():
        s = g[g.phase == phase]
        sns.stripplot(
            x=s["multiple"],
            y=s["value"],
            ax=ax,
            color=colour,
            alpha=0.6,
            size=4,
            native_scale=True,
            jitter=0.04,
            log_scale=(2, None),
        )
        mean = s.groupby("multiple")["value"].mean()
        ax.plot(mean.index, mean.values, color=colour, marker="D", label=label)
    ax.axvline(p.reference, color="black", ls=":", lw=0.8)
    ax.set_xticks(multiples, labels=[f"{m}" for m in multiples])
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    if q == "affine_rank_kept":
        ax.set_ylim(-0.05, 1.05)
    ax.set_yscale(scale)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(f"d_ff / d   (d = {p.d})")
    ax.set_ylabel("")
axes.flat[0].legend(fontsize=7)
fig.suptitle(
    "Feed-forward width: one dot per seed, diamonds the mean; dotted line "
    f"the heuristic d_ff = {p.reference}d",
    fontsize=10,
)
fig.tight_layout()
save(fig, snakemake.output.png)
log.info("figure written")
