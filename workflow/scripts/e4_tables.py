"""E4 tables: energy outside T per model and per layer, propagation, regime."""

import pandas as pd

from rankcollapse.io import setup_logging, write_csv

log = setup_logging(snakemake.log[0])
inp, labels = snakemake.input, snakemake.params.labels


def quartiles(g):
    return (
        g["value"]
        .agg(
            median="median",
            q25=lambda v: v.quantile(0.25),
            q75=lambda v: v.quantile(0.75),
            max="max",
            count="count",
        )
        .reset_index()
    )


energy = pd.concat(map(pd.read_parquet, inp.energy), ignore_index=True)
e = energy[energy.metric == "energy_outside"]

# Per model, over every (sequence, layer): the numbers the chapter quotes.
summary = quartiles(e.groupby(["model", "d", "H", "site", "subspace"]))
summary.insert(1, "label", summary["model"].map(labels))
write_csv(summary, snakemake.output.summary)
for row in summary[summary.subspace == "linear"].itertuples():
    log.info("%s %s: median energy outside T %.3g", row.model, row.site, row.median)

# Per layer, with the dimension of each subspace against its bound.
per_layer = quartiles(e.groupby(["model", "layer", "site", "subspace"]))
dims = (
    energy[energy.metric.isin(["dim", "bound"])]
    .groupby(["model", "layer", "subspace", "metric"])["value"]
    .median()
    .unstack("metric")
    .rename(columns={"dim": "dim_median", "bound": "bound_median"})
    .reset_index()
)
per_layer = per_layer.merge(dims, on=["model", "layer", "subspace"])
write_csv(per_layer, snakemake.output.energy)

# Propagation: attention-only and full states against T_l, layer by layer.
prop = pd.concat(map(pd.read_parquet, [*inp.propagation, inp.deep]), ignore_index=True)
pe = prop[prop.metric == "energy_outside"]
table = quartiles(pe.groupby(["model", "d", "H", "layer", "stack", "subspace"]))
pdims = (
    prop[prop.metric.isin(["dim", "bound"])]
    .groupby(["model", "layer", "metric"])["value"]
    .median()
    .unstack("metric")
    .rename(columns={"dim": "dim_T_median", "bound": "bound"})
    .reset_index()
)
table = table.merge(pdims, on=["model", "layer"])
table.insert(1, "label", table["model"].map(labels))
write_csv(table, snakemake.output.propagation)

# Which sequences were short enough.
regime = pd.concat(map(pd.read_parquet, inp.regime), ignore_index=True)
regime.insert(1, "label", regime["model"].map(labels))
write_csv(regime, snakemake.output.regime)
