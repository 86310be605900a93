"""Build the Jupyter Book from book/ into results/book/html.

The sources are copied to a scratch folder, every page is executed against
results/, warnings fail the build, and the HTML replaces the old one only once
the build has succeeded.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rankcollapse.io import setup_logging

log = setup_logging(snakemake.log[0])
out_html = Path(snakemake.output.html).parent
results = Path(snakemake.params.results).resolve()

with tempfile.TemporaryDirectory(prefix="book-") as scratch:
    src = Path(scratch) / "src"
    shutil.copytree(snakemake.params.src, src)
    # The kernels that execute the pages run this interpreter's environment.
    bindir = str(Path(sys.executable).parent)
    env = dict(
        os.environ,
        RANKCOLLAPSE_RESULTS=str(results),
        HF_HUB_OFFLINE="1",
        PATH=bindir + os.pathsep + os.environ.get("PATH", ""),
    )
    cmd = [
        str(Path(bindir) / "jupyter-book"),
        "build",
        "--warningiserror",
        "--keep-going",
        "--path-output",
        scratch,
        str(src),
    ]
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    log.info("jupyter-book output:\n%s\n%s", proc.stdout, proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"jupyter-book failed (exit {proc.returncode}); see the log")

    built = Path(scratch) / "_build" / "html"
    staging = out_html.with_name(out_html.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(built, staging)
    shutil.rmtree(out_html, ignore_errors=True)
    staging.rename(out_html)
log.info("book written to %s", out_html / "index.html")
