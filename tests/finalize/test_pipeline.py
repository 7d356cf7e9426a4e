"""Stage 4's Beam graph (wit_builder.finalize.pipeline): composites fed with ``beam.Create`` and checked with
``assert_that``, the record coder, and what ReadRawShards reads (wit_builder.download.raw_shards)."""

from __future__ import annotations

import io
import pickle

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.finalize import RawRecord
from tests.conftest import BEAM_IN_PROCESS
from tests.finalize.examples import record
from wit_builder.beam.counting import COUNTS
from wit_builder.download import raw_shards
from wit_builder.finalize.pipeline import (
    DECIDED,
    DropRepeatedUids,
    KeyedRecord,
    RawRecordCoder,
    ReadRawShards,
    WriteQueryCounts,
)


def beam_pipeline() -> BeamTestPipeline:
    return BeamTestPipeline(options=beam.options.pipeline_options.PipelineOptions(BEAM_IN_PROCESS))


def summed(counts):
    """A COUNTS output summed by name (bundles emit their own tallies)."""
    return counts | "SumCounts" >> beam.CombinePerKey(sum)


# ---- the record between the steps ----

def test_records_survive_beams_coders_and_encode_deterministically():
    rec = record("a1")
    failed = record("b2", status="failed_to_download").replace(index=None)
    numbered = rec.replace(index=7, key="0000000007", shard="00001")
    coder = beam.coders.registry.get_coder(RawRecord)
    assert isinstance(coder, RawRecordCoder) and coder.is_deterministic()
    for value in (rec, failed, numbered):
        assert coder.decode(coder.encode(value)) == value
        assert pickle.loads(pickle.dumps(value)) == value  # the fallback for tagged outputs
    keyed = beam.coders.registry.get_coder(KeyedRecord)
    assert keyed.is_deterministic() and keyed.decode(keyed.encode(("a1", rec))) == ("a1", rec)
    assert len(coder.encode(rec)) < len(beam.coders.FastPrimitivesCoder().encode(rec.final_row()))
    # A frozen dataclass of primitives has Beam's deterministic encoding (should a record ever be a key).
    deterministic = beam.coders.FastPrimitivesCoder().as_deterministic_coder("test")
    assert deterministic.encode(rec) == deterministic.encode(record("a1"))
    assert deterministic.decode(deterministic.encode(rec)) == rec


# ---- reading ----

def test_read_raw_shards_gives_every_row_and_counts_them(raw):
    files = sorted(str(p) for p in raw.root.glob("*.parquet"))
    with beam_pipeline() as p:
        read = p | ReadRawShards(raw_shards.raw_shard_names(files))
        assert_that(read.rows | "Uids" >> beam.Map(lambda r: (r.raw_shard, r.row, r.uid)),
                    equal_to([(shard, row, r["uid"]) for (shard, row), r in raw.rows.items()]), label="Rows")
        statuses: dict[str, int] = {}
        for r in raw.rows.values():
            status = "failed_to_decode" if r["status"] == "failed_to_resize" else r["status"]  # img2dataset's name
            statuses[f"raw_status_{status}"] = statuses.get(f"raw_status_{status}", 0) + 1
        assert_that(summed(read[COUNTS]), equal_to([("rows", len(raw.rows)), *statuses.items()]), label="Counts")


def test_index_tar_keeps_the_members_before_a_truncation(raw):
    data = (raw.root / "00000.tar").read_bytes()
    whole, error = raw_shards.index_tar(io.BytesIO(data))
    successes = [r["key"] for k, r in raw.rows.items() if k[0] == "00000" and r["status"] == "success"]
    assert error is None and sorted(whole) == successes
    assert all(set(members) == {"jpg", "json", "txt"} or set(members) == {"webp", "json", "txt"}
               for members in whole.values())
    cut = len(data) // 2
    part, error = raw_shards.index_tar(io.BytesIO(data[:cut]))
    assert 0 < len(part) < len(whole)
    successes = [r for k, r in sorted(raw.rows.items()) if k[0] == "00000" and r["status"] == "success"]
    records = [RawRecord(key=None, uid=r["uid"], url=r["url"], caption=None, queries=(), status="success",
                         error_message=None, http_status=200, width=1, height=1, original_width=1,
                         original_height=1, sha256="0" * 64, phash="0" * 16, bytes=1, shard=None, duplicate_of=None,
                         raw_shard="00000", raw_key=r["key"], row=i, raw_rows=len(successes), raw_status="success",
                         reason="success") for i, r in enumerate(successes)]
    attached = raw_shards.attach_images(records, "00000.tar", part, cut, error, lambda o, s: data[o:o + s])
    failed = [r for r in attached if r.status == "failed_to_decode"]
    assert failed and all("00000.tar" in (r.error_message or "") and r.reason == "raw_image_unreadable"
                          and r.image is None for r in failed)
    located = [r for r in attached if r.image is not None]
    assert len(failed) + len(located) == len(records) and all(r.status == "success" for r in located)
    for r in located:  # the location points at the member's bytes
        assert r.image.path == "00000.tar" and (r.image.offset, r.image.size) == whole[r.raw_key][r.image.ext]
    assert [r.uid for r in attached] == [r.uid for r in records]  # same rows, same order


def test_raw_shard_names_are_unique_and_readable():
    names = raw_shards.raw_shard_names(["gs://b/run1/00000.parquet", "gs://b/run2/00000.parquet"])
    assert names == {"gs://b/run1/00000.parquet": "run1-00000", "gs://b/run2/00000.parquet": "run2-00000"}


def test_table_rows_maps_img2dataset_statuses_and_text_query_lists():
    columns = {"key": ["a", "b", "c"], "uid": ["1", "2", "3"], "url": ["https://x/1.jpg"] * 3,
               "status": ["success", "failed_to_resize", "blocked"],
               "queries": ['["dog", "cat", "dog"]', "space", None]}
    rows = raw_shards.table_rows(columns, "x.parquet", "x")
    assert [r.status for r in rows] == ["success", "failed_to_decode", "blocked"]
    assert [r.raw_status for r in rows] == ["success", "failed_to_decode", "blocked"]
    assert [r.reason for r in rows] == ["success", "failed_to_decode", "blocked"]
    assert [r.queries for r in rows] == [("cat", "dog"), ("space",), ()]
    assert [r.row for r in rows] == [0, 1, 2] and {r.raw_rows for r in rows} == {3}
    assert all(r.image is None and r.hash_source == "raw" and r.final_row()["raw_shard"] == "x" for r in rows)
    with pytest.raises(raw_shards.RawInputError, match=r"x.parquet: row 1: empty uid"):
        raw_shards.table_rows(dict(columns, uid=["1", "", "3"]), "x.parquet", "x")


# ---- selection ----

def test_drop_repeated_uids_keeps_one_row_per_uid_and_counts_uids_and_candidates():
    rows = [record("a1", shard="00000", row=0), record("a1", shard="00001", row=0),
            record("b2", row=1, status="failed_to_download"),
            record("c3", row=2).replace(hash_source="stored_bytes")]
    with beam_pipeline() as p:
        out = p | beam.Create(rows) | DropRepeatedUids()
        assert_that(out.kept | "Kept" >> beam.Map(lambda r: (r.uid, r.raw_shard)),
                    equal_to([("a1", "00000"), ("c3", "00000")]), label="Kept")
        assert_that(out[DECIDED] | "Decided" >> beam.Map(lambda r: (r.uid, r.status, r.reason)),
                    equal_to([("a1", "duplicate", "repeated_uid"), ("b2", "failed_to_download", "failed_to_download")]),
                    label="Decided")
        assert_that(summed(out[COUNTS]),
                    equal_to([("uids", 3), ("hash_source_raw", 1), ("hash_source_stored_bytes", 1)]), label="Counts")


def test_query_counts_count_each_query_entering_and_final(tmp_path):
    path = tmp_path / "query_counts.parquet"
    candidates = [record("01", queries=("moon",)), record("02", queries=("moon", "sun"))]
    with beam_pipeline() as p:
        selected = {"candidates": p | "Candidates" >> beam.Create(candidates),
                    "kept": p | "Kept" >> beam.Create(candidates[:1])}
        _ = selected | WriteQueryCounts(str(path))
    table = pq.read_table(path).to_pylist()
    assert [(r["query"], r["input"], r["final"]) for r in table] == [("moon", 2, 1), ("sun", 1, 0)]
