"""E6 overhead table: PG-OP gate parameters against W_O's, counted on instantiated
modules of every analysed model and of the reference configurations."""

from transformers import AutoConfig

from rankcollapse import pgop
from rankcollapse.io import setup_logging, write_csv

log = setup_logging(snakemake.log[0])

configs = {
    name: AutoConfig.from_pretrained(path)
    for name, path in snakemake.params.model_dirs.items()
}
configs |= {
    name: AutoConfig.for_model(**spec)
    for name, spec in snakemake.params.reference_configs.items()
}
table = pgop.overhead_table(configs, pgop.PGOPConfig(**snakemake.params.pgop))
table.insert(1, "analysed", table["model"].isin(snakemake.params.model_dirs))
table["below_bound"] = table["overhead"] < snakemake.params.bound
log.info("overhead:\n%s", table.to_string())
write_csv(table, snakemake.output.table)
