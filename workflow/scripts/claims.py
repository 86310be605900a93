"""Merge the per-claim verdict files into results/claims.json."""

from rankcollapse.io import setup_logging, write_json
from rankcollapse.verdict import merge

log = setup_logging(snakemake.log[0])
claims = merge(list(snakemake.input))
for cid, v in claims.items():
    log.info("%s: %s", cid, v["verdict"])
write_json(claims, snakemake.output[0])
