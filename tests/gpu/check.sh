#!/usr/bin/env bash
# On a machine with a CUDA GPU and a CUDA build of torch: the device tests, then
# config/test.yaml (without the book) through the GPU profile with a GPU per
# model job and through the CPU, and how far their tables are apart. Fails if
# the run record does not name a CUDA device or TF32 is on; prints the GPU's
# name and, per table, the largest difference from the CPU run.
#
#   tests/gpu/check.sh [scratch folder, default /tmp/rankcollapse-gpu-check]
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
OUT=${1:-/tmp/rankcollapse-gpu-check}

python -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA GPU'; \
print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
python -m pytest -q tests/test_models.py -k "device or cuda or auto"

run() {  # run <folder> <snakemake options...>
    local dir=$1; shift
    python -m snakemake --configfile config/test.yaml -d "$dir" --omit-from book \
        --quiet progress "$@"
}
time run "$OUT/gpu" --workflow-profile "$PWD/workflow/profiles/gpu" --config gpu_per_job=1
time run "$OUT/cpu" --cores all --config device=cpu

python - "$OUT" <<'PY'
import json
import sys
from pathlib import Path

import pandas as pd

out = Path(sys.argv[1])
rec = json.loads((out / "gpu/results/run_record.json").read_text())
print("run record:", rec["device"], rec["device_detail"])
assert rec["device"].startswith("cuda:"), rec["device"]
assert not rec["device_detail"]["tf32_matmul"], "TF32 is on"
for gpu in sorted((out / "gpu/results").rglob("*.parquet")):
    cpu = out / "cpu" / gpu.relative_to(out / "gpu")
    a, b = pd.read_parquet(gpu), pd.read_parquet(cpu)
    num = a.select_dtypes("number").columns
    diff = (a[num] - b[num]).abs().max().max() if len(a) == len(b) else "rows differ"
    print(f"{gpu.relative_to(out / 'gpu')}: {len(a)} rows, max |gpu - cpu| = {diff}")
PY
