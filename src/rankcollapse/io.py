"""Logging, atomic writes and run records shared by the workflow scripts."""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
from pathlib import Path

import pandas as pd


def setup_logging(log_file: str | Path | None = None, level=logging.INFO):
    """Send ``logging`` to the rule's log file (and stderr), replacing old handlers."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    log = logging.getLogger("rankcollapse")

    # An uncaught error ends up in the rule's log too, not only on the console.
    def excepthook(kind, value, tb):
        log.error("%s: %s", kind.__name__, value, exc_info=(kind, value, tb))

    sys.excepthook = excepthook
    return log


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    """Write ``df`` to ``path`` through a temporary file, so no half file remains."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def write_json(obj, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def environment_record() -> dict:
    """Software versions and hardware, recorded at run time for the methods page."""
    import numpy
    import torch
    import transformers

    rec = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "pandas": pd.__version__,
        "cuda_available": torch.cuda.is_available(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        rec["gpu"] = torch.cuda.get_device_name(0)
    try:
        import snakemake

        rec["snakemake"] = snakemake.__version__
    except Exception:  # noqa: BLE001 - the record is informative only
        pass
    return rec


class ParquetAppender:
    """Write a parquet file one batch (row group) at a time, so memory stays
    bounded by the batch; the file appears under its name only when closed
    without error.

        with ParquetAppender(path) as out:
            for rows in batches:
                out.append(rows)
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp")
        self.writer = None
        self.schema = None

    def append(self, rows: list[dict] | pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        if df.empty:
            return
        table = pa.Table.from_pandas(df, schema=self.schema, preserve_index=False)
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.schema = table.schema
            self.writer = pq.ParquetWriter(self.tmp, self.schema)
        self.writer.write_table(table)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if self.writer is not None:
            self.writer.close()
        if kind is not None:
            self.tmp.unlink(missing_ok=True)
            return False
        if self.writer is None:  # nothing appended: an empty table
            pd.DataFrame().to_parquet(self.tmp)
        os.replace(self.tmp, self.path)
        return False
