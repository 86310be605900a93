"""Atomic writers: no half-written file is ever left under the final name."""

import pandas as pd
import pytest

from rankcollapse.io import ParquetAppender, write_csv


def test_appender_writes_all_batches(tmp_path):
    path = tmp_path / "t.parquet"
    with ParquetAppender(path) as out:
        out.append([{"a": 1, "b": 0.5}])
        out.append(pd.DataFrame({"a": [2, 3], "b": [1.5, 2.5]}))
    assert pd.read_parquet(path).a.tolist() == [1, 2, 3]


def test_appender_leaves_nothing_on_error(tmp_path):
    path = tmp_path / "t.parquet"
    with pytest.raises(RuntimeError), ParquetAppender(path) as out:
        out.append([{"a": 1}])
        raise RuntimeError("job killed")
    assert list(tmp_path.iterdir()) == []


def test_csv_is_replaced_whole(tmp_path):
    path = tmp_path / "t.csv"
    write_csv(pd.DataFrame({"x": [1]}), path)
    write_csv(pd.DataFrame({"x": [2, 3]}), path)
    assert pd.read_csv(path).x.tolist() == [2, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]
