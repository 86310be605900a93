"""Record models (with revisions), corpus, tolerances, device, software and hardware.

The device is resolved here, in a job that asks for the same resources as the
model rules (a GPU when config key gpu_per_job is set), so it names what they
ran on: `cuda:0` with the GPU's name, or `cpu`.
"""

import json
from pathlib import Path

from rankcollapse.io import environment_record, setup_logging, write_json
from rankcollapse.models import describe_device, set_determinism

log = setup_logging(snakemake.log[0])
set_determinism()
device = describe_device(snakemake.params.device)
log.info(
    "device %s resolves to %s (%s)",
    device["requested"],
    device["resolved"],
    device["name"],
)
record = {
    "environment": environment_record(),
    "device": device["resolved"],
    "device_detail": device,
    "models": {
        Path(p).parent.name: json.loads(Path(p).read_text())
        for p in snakemake.input.provenance
    },
    "corpus": snakemake.params.corpus,
    "tolerances": snakemake.params.tolerances,
}
write_json(record, snakemake.output[0])
log.info("run record written")
