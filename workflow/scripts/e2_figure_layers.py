"""E2 figure: sigma_min / sigma_1 against depth in the random stacks, by scale."""

import pandas as pd

from rankcollapse import plotting
from rankcollapse.io import setup_logging

log = setup_logging(snakemake.log[0])
layers = pd.read_parquet(snakemake.input.layers)
layers["model"] = layers["model"].map(snakemake.params.labels)

g = plotting.band_plot(
    layers,
    x="layer",
    hue="setting",
    col="model",
    row="variant",
    ylabel=r"$\sigma_{\min} / \sigma_1$",
    logy=True,
)
plotting.save(g.figure, snakemake.output.png)
log.info("figure written")
