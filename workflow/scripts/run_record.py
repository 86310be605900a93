"""Record models (with revisions), corpus, tolerances, software and hardware."""

import json
from pathlib import Path

from rankcollapse.io import environment_record, setup_logging, write_json

log = setup_logging(snakemake.log[0])
record = {
    "environment": environment_record(),
    "device": snakemake.params.device,
    "models": {
        Path(p).parent.name: json.loads(Path(p).read_text())
        for p in snakemake.input.provenance
    },
    "corpus": snakemake.params.corpus,
    "tolerances": snakemake.params.tolerances,
}
write_json(record, snakemake.output[0])
log.info("run record written")
