"""``wit_builder.pairs.inputs``: the queries file and the pool files, found and checked before any work."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.pairs.conftest import write_queries
from wit_builder.beam import fileio
from wit_builder.pairs import inputs
from wit_builder.pairs.readers.layouts import PoolOptions
from wit_builder.pairs.readers.records import PoolFormatError


def test_queries_file_must_exist_and_suit_the_rule(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"^--queries {tmp_path}: holds no queries.parquet; run 'wit "
                                                "build-queries' first"):
        inputs.queries_path(str(tmp_path))
    path = inputs.queries_path(str(write_queries(tmp_path / "q", ["red bus", "cat"])))
    assert inputs.queries_path(path) == path  # the file itself, not a folder holding another
    with pytest.raises(FileNotFoundError) as missing:
        inputs.queries_path(str(tmp_path / "nope" / "queries.parquet"))
    assert str(missing.value).count("queries.parquet") == 1, missing.value  # said once, not doubled
    assert inputs.check_entries(path, "normalized") == 2
    pq.write_table(pa.table({"query": ["red bus", "cat", "cat"], "query_as_written": ["Red Bus", "Cat", "cat"]}),
                   tmp_path / "queries.parquet")
    path = inputs.queries_path(str(tmp_path))
    assert inputs.check_entries(path, "normalized") == 3  # rows, as the run's first line says
    for rule, entries in (("normalized", ["cat", "red bus"]), ("metaclip", ["Cat", "Red Bus", "cat"])):
        queries = inputs.QueriesFile(path, fileio.sha256_file(path), rule)
        assert inputs.load_entries(queries).to_pylist() == entries  # sorted, distinct: id i is entry i
    pq.write_table(pa.table({"query": ["New York"]}), tmp_path / "queries.parquet")
    with pytest.raises(ValueError, match="'New York' is not normalized"):
        inputs.check_entries(path, "normalized")
    assert inputs.check_entries(path, "metaclip") == 1


def test_pool_files_are_expanded_sorted_and_checked(tmp_path: Path) -> None:
    for name in ("b.parquet", "a.parquet"):
        pq.write_table(pa.table({"url": ["http://e.com/x.jpg"], "caption": ["x"]}), tmp_path / name)
    (tmp_path / "sub").mkdir()
    assert inputs.pool_files([str(tmp_path / "*")], PoolOptions()) == [str(tmp_path / "a.parquet"),
                                                                       str(tmp_path / "b.parquet")]
    with pytest.raises(FileNotFoundError, match="matches no file"):
        inputs.pool_files([str(tmp_path / "none-*.jsonl")], PoolOptions())
    with pytest.raises(PoolFormatError, match="'alt'"):
        inputs.pool_files([str(tmp_path / "a.parquet")], PoolOptions(caption_col="alt"))


def test_inputs_that_are_not_regular_files_are_refused_before_work(tmp_path: Path) -> None:
    """A named pipe among the pool files (or as the queries file) would block the run forever on open: refused
    by name before anything is read, whether named or matched by a glob."""
    import os

    pq.write_table(pa.table({"url": ["http://e.com/x.jpg"], "caption": ["x"]}), tmp_path / "a.parquet")
    os.mkfifo(tmp_path / "b.parquet")
    for pattern in (str(tmp_path / "b.parquet"), str(tmp_path / "*.parquet")):
        with pytest.raises(ValueError, match=f"pool '{tmp_path / 'b.parquet'}' is a named pipe \\(FIFO\\), not a "
                                             "regular file"):
            inputs.pool_files([pattern], PoolOptions())
    os.mkfifo(tmp_path / "queries.parquet")
    with pytest.raises(ValueError, match="--queries .* is a named pipe"):
        inputs.queries_path(str(tmp_path))
