"""Fetch one configured model into models/<name>/ (see rankcollapse.models)."""

from rankcollapse.io import setup_logging
from rankcollapse.models import fetch_model

log = setup_logging(snakemake.log[0])
name = snakemake.wildcards.model
out_dir = fetch_model(
    name,
    snakemake.params.spec,
    out_dir=snakemake.params.models_dir + "/" + name,
    models_dir=snakemake.params.models_dir,
)
log.info("fetched %s into %s", name, out_dir)
