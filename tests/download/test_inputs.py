"""Stage 3's inputs (wit_builder.download.inputs): which files --pairs names, their checks before any work,
the url shards cut from them and a shard's rows read back."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.download.conftest import write_pairs
from wit_builder.core.errors import InputError
from wit_builder.core.table_checks import ColumnTypeError
from wit_builder.download.inputs import PairsInputError, input_files, plan_shards, read_shard_rows


def test_shards_group_rows_by_host_across_files_and_row_groups(tmp_path):
    hosts = ["a.example", "b.example", "c.example"]
    first = write_pairs(tmp_path / "a.parquet", [{"uid": f"a{i}", "url": f"http://{hosts[i % 3]}/{i}.jpg"}
                                                 for i in range(12)])
    second = write_pairs(tmp_path / "b.parquet", [{"uid": f"b{i}", "url": f"http://A.example/{i}.jpg"}
                                                  for i in range(5)])
    specs = plan_shards([str(first), str(second)], rows_per_shard=7)
    assert sum(s.rows for s in specs) == 17 and all(s.rows <= 7 for s in specs)
    shard_rows = [read_shard_rows(s) for s in specs]
    host_of = {}
    for spec, rows in zip(specs, shard_rows, strict=True):
        for row in rows:
            host = row["url"].split("/")[2].lower()
            assert host_of.setdefault(host, spec.chain) == spec.chain  # one host, one chain
    # a.example has 4 + 5 = 9 rows > 7: a chain of two shards of its own; b and c (4 rows each) are packed
    chain_a = [s for s in specs if s.chain == host_of["a.example"]]
    assert [s.rows for s in chain_a] == [7, 2]
    assert sorted(r["uid"] for rows in shard_rows for r in rows) == sorted(
        [f"a{i}" for i in range(12)] + [f"b{i}" for i in range(5)])
    assert plan_shards([str(first), str(second)], rows_per_shard=7) == specs  # deterministic


def test_a_pairs_folder_means_its_pairs_files_not_its_other_tables(tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    pairs = [write_pairs(folder / f"pairs-0000{i}-of-00002.parquet", [{"uid": f"u{i}", "url": f"http://h/{i}"}])
             for i in range(2)]
    pq.write_table(pa.table({"query": ["cat"], "matched": [1], "kept": [1]}), folder / "query_counts.parquet")
    assert input_files(str(folder)) == [str(p) for p in pairs]
    # a folder of other url tables still works, and a folder without parquet is named in the error
    other = tmp_path / "tables"
    other.mkdir()
    table = write_pairs(other / "laion.parquet", [{"uid": "x", "url": "http://h/x"}])
    assert input_files(str(other)) == [str(table)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"--pairs '.*empty' holds no pairs-\*\.parquet nor any \*\.parquet"):
        input_files(str(tmp_path / "empty"))


def test_files_that_are_not_pairs_to_download_are_refused_naming_the_file(tmp_path):
    pq.write_table(pa.table({"link": ["x"]}), tmp_path / "nourl.parquet")
    with pytest.raises(PairsInputError, match=r"nourl.parquet: no 'url' column \(has \['link'\]\)"):
        plan_shards([str(tmp_path / "nourl.parquet")], 10)
    pq.write_table(pa.table({"key": ["0"], "url": ["http://h/0"], "status": ["success"]}), tmp_path / "00000.parquet")
    with pytest.raises(PairsInputError, match="00000.parquet: a raw download shard"):
        plan_shards([str(tmp_path / "00000.parquet")], 10)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(PairsInputError, match="junk.parquet: not a readable parquet file"):
        plan_shards([str(tmp_path / "junk.parquet")], 10)
    pq.write_table(pa.table({"url": ["http://h/0"], "caption": [7]}), tmp_path / "typed.parquet")
    with pytest.raises(ColumnTypeError, match="typed.parquet"):  # core.table_checks' message, not rewrapped
        plan_shards([str(tmp_path / "typed.parquet")], 10)
    assert issubclass(PairsInputError, InputError) and issubclass(ColumnTypeError, InputError)


def test_a_shards_rows_keep_their_download_order_and_only_the_input_columns(tmp_path):
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"url": [f"http://h{i % 2}/{i}" for i in range(12)], "extra": list(range(12))}), path,
                   row_group_size=4)
    specs = plan_shards([str(path)], rows_per_shard=6)
    for spec in specs:
        rows = read_shard_rows(spec)
        assert [r["url"] for r in rows] == [f"http://h{row % 2}/{row}" for _, row in spec.members]
        assert all(set(r) == {"url"} for r in rows)  # INPUT_COLUMNS present in the file; "extra" is not read
