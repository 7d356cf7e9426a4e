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
    with pytest.raises(FileNotFoundError, match="queries.parquet not found; run 'wit build-queries' first"):
        inputs.queries_path(str(tmp_path))
    path = inputs.queries_path(str(write_queries(tmp_path / "q", ["red bus", "cat"])))
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
