"""E2 tables: drops per setting (random and own weights), the exceptional set."""

import pandas as pd

from rankcollapse.genericity import (
    drop_table,
    exceptional_table,
    layer_summary,
    per_unit,
)
from rankcollapse.io import setup_logging, write_csv, write_parquet

log = setup_logging(snakemake.log[0])
inp, p = snakemake.input, snakemake.params

# Random draws: per draw, then per model, input, variant and scale.
trial_keys = ["model", "input", "variant", "scale"]
trials = pd.concat(map(pd.read_parquet, inp.trials), ignore_index=True)
trial_units = per_unit(trials, trial_keys, "draw")
trial_table = drop_table(trial_units, trial_keys, p.confidence)

# Wall and CPU time of each trials job, from its Snakemake benchmark. Logged,
# not tabled: a result table must come out identical when rerun.
jobs = [(m, float(s)) for m in p.models for s in p.scales]
for job, f in zip(jobs, inp.benchmarks, strict=True):
    bench = pd.read_csv(f, sep="\t").iloc[0]
    log.info("trials %s: %.1f s wall, %.1f s CPU", job, bench["s"], bench["cpu_time"])

# sigma_min / sigma_1 against depth, median and quartiles over draws.
layers = layer_summary(trials, trial_keys, "sigma_min_ratio")
layers["setting"] = layers["input"] + " x" + layers["scale"].map("{:g}".format)

# The models' own weights: per sequence, then per model and variant.
own_keys = ["model", "init", "variant"]
own = pd.concat(map(pd.read_parquet, inp.own), ignore_index=True)
own_units = per_unit(own, own_keys, "seq")
own_table = drop_table(own_units, own_keys, p.confidence)

# The exceptional set.
exceptional = pd.concat(map(pd.read_parquet, inp.exceptional), ignore_index=True)
exc_table = exceptional_table(exceptional, [10.0**e for e in p.fit_exponents])

# Per draw and per sequence, for the figure.
units = pd.concat(
    [
        trial_units.assign(setting=[f"x{s:g}" for s in trial_units["scale"]]),
        own_units.assign(input="corpus", setting="own"),
    ],
    ignore_index=True,
)

write_csv(trial_table, snakemake.output.trials)
write_csv(own_table, snakemake.output.own)
write_csv(exc_table, snakemake.output.exceptional)
write_parquet(units, snakemake.output.units)
write_parquet(layers, snakemake.output.layers)
for _, r in trial_table.iterrows():
    log.info(
        "%s %s %s x%g: %d/%d dropped",
        r["model"],
        r["input"],
        r["variant"],
        r["scale"],
        r["dropped"],
        r["units"],
    )
