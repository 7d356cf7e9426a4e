"""Stage 4's output folder around the run (wit_builder.finalize.outputs): what a rerun removes first, the tables
the pipeline hands over, and the files written last (stats.json very last)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.finalize import QUERY_COUNTS
from tests.finalize.examples import QUERIES, STATS
from wit_builder.finalize import outputs


def test_a_rerun_first_removes_the_completion_files_and_orphans(tmp_path):
    rows = tmp_path / "accounting" / "rows"
    rows.mkdir(parents=True)
    kept = [tmp_path / "00000.tar", tmp_path / "00000.parquet", rows / "00000.parquet"]
    gone = [tmp_path / "stats.json", tmp_path / "sizes.json", tmp_path / "DATASET.md", tmp_path / "00001.tar.tmp-ab",
            rows / "00000.parquet.tmp-cd"]
    for path in kept + gone:
        path.write_bytes(b"x")
    assert sorted(outputs.start_rerun(str(tmp_path))) == sorted(str(p) for p in gone)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in gone)
    assert outputs.start_rerun(str(tmp_path)) == []


def test_stale_shards_and_accounting_of_an_earlier_run_are_removed(tmp_path):
    rows = tmp_path / "accounting" / "rows"
    rows.mkdir(parents=True)
    names = ["00000.tar", "00000.parquet", "00001.tar", "00001.parquet", "notes.tar"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    for raw in ("run1-00000", "run2-00000"):
        (rows / f"{raw}.parquet").write_bytes(b"x")
    stale = outputs.remove_stale_outputs(str(tmp_path), ["00000"], ["run1-00000"])
    assert sorted(stale) == sorted(str(p) for p in (tmp_path / "00001.tar", tmp_path / "00001.parquet",
                                                    rows / "run2-00000.parquet"))
    assert sorted(p.name for p in tmp_path.glob("*.*")) == ["00000.parquet", "00000.tar", "notes.tar"]


def test_the_pipeline_hands_over_the_written_sizes_and_the_query_counts(tmp_path):
    (tmp_path / outputs.WRITTEN_SIZES).write_text(json.dumps({"00001": 3, "00000": 4}))
    assert outputs.read_written_sizes(str(tmp_path)) == {"00000": 4, "00001": 3}
    assert not (tmp_path / outputs.WRITTEN_SIZES).exists()  # transient: every run rewrites it
    (tmp_path / "accounting").mkdir()
    rows = [{"query": "moon", "input": 2, "final": 1}, {"query": "sun", "input": 1, "final": 0}]
    pq.write_table(pa.Table.from_pylist(rows, schema=QUERY_COUNTS), tmp_path / "accounting" / "query_counts.parquet")
    assert outputs.read_query_counts(str(tmp_path)) == [("moon", 2, 1), ("sun", 1, 0)]


def test_the_summary_files_are_written_with_stats_json_last(tmp_path, monkeypatch):
    written: list[str] = []
    real_write_bytes = outputs.fileio.write_bytes
    monkeypatch.setattr(outputs.fileio, "write_bytes",
                        lambda path, data: (written.append(path.rsplit("/", 1)[-1]), real_write_bytes(path, data)))
    (tmp_path / "00009.tar").write_bytes(b"an earlier run's shard")
    outputs.write_summary(str(tmp_path), STATS, QUERIES, {"00000": 2}, {"stage": "finalize"})
    assert written == ["image_sizes.png", "query_counts.png", "sizes.json", "DATASET.md", "stats.json"]
    assert not (tmp_path / "00009.tar").exists()
    assert json.loads((tmp_path / "sizes.json").read_text()) == {"00000": 2}
