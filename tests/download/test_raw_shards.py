"""Stage 3's raw shards (wit_builder.download.raw_shards): as written (names, keys, the deterministic tar and
parquet, the per-shard stats and the hints) and as read back for stage 4 (shard names, rows of both engines'
layouts, the tar index and images attached to rows, on the shared raw shards of tests/conftest.py)."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from schemas.download import RAW_ROWS
from schemas.finalize import RawRecord
from wit_builder.core.errors import InputError
from wit_builder.download import raw_shards
from wit_builder.download.raw_shards import RawSample


def sample(i: int, status: str = "success", error: str | None = None) -> RawSample:
    row = {"key": raw_shards.sample_key(2, i, 100), "uid": f"u{i}", "url": f"http://h/{i}.jpg", "caption": f"c{i}",
           "queries": ["q"], "status": status, "error_message": error, "bytes": 10 if status == "success" else None}
    return RawSample(row, b"jpeg-bytes" if status == "success" else None, "jpg" if status == "success" else None)


def test_names_and_keys_follow_img2dataset():
    assert raw_shards.shard_name(42) == "00042"
    assert raw_shards.shard_files(42) == ("00042.tar", "00042.parquet", "00042_stats.json")
    assert raw_shards.sample_key(42, 7, 10_000) == "000420007" and raw_shards.sample_key(1, 3, 10) == "000013"


def test_the_tar_holds_the_successes_in_key_order_and_the_same_rows_give_the_same_bytes():
    samples = [sample(1), sample(0), sample(2, "blocked", "robots.txt disallows http://h/2.jpg")]
    written = []
    for order in (samples, samples[::-1]):
        buf = io.BytesIO()
        assert raw_shards.write_tar(buf, order) == 2
        written.append(buf.getvalue())
    assert written[0] == written[1]
    with tarfile.open(fileobj=io.BytesIO(written[0])) as tar:
        names = tar.getnames()
        assert names == ["0000200.jpg", "0000200.json", "0000200.txt", "0000201.jpg", "0000201.json", "0000201.txt"]
        assert json.loads(tar.extractfile("0000201.json").read())["uid"] == "u1"
    table = raw_shards.rows_table(samples)
    assert table.schema.equals(RAW_ROWS) and table.column("key").to_pylist() == sorted(s.row["key"] for s in samples)


def test_shard_stats_count_statuses_and_error_kinds_without_urls():
    samples = [sample(0), sample(1, "failed_to_download", "HTTP 404 from http://h/1.jpg"),
               sample(2, "failed_to_download", "HTTP 404 from http://other/2.jpg")]
    stats = raw_shards.shard_stats(2, samples, "native")
    assert stats["shard"] == "00002" and stats["count"] == 3 and stats["successes"] == 1
    assert stats["statuses"] == {"success": 1, "failed_to_download": 2, "failed_to_decode": 0, "blocked": 0,
                                 "filtered": 0}
    assert stats["bytes_downloaded"] == 10 and stats["top_errors"] == {"HTTP 404 from <url>": 2}
    assert raw_shards.merge_top_errors([{"a": 1, "b": 2}, {"a": 2}], limit=1) == {"a": 3}


def test_hints_match_the_top_errors():
    hints = raw_shards.failure_hints({"blocked": 3, "success": 0}, {"loopback address 127.0.0.1": 3})
    assert len(hints) == 1 and "--allow-private-networks" in hints[0]
    assert raw_shards.failure_hints({"filtered": 0}, {}) == ["see top_errors in the shards' *_stats.json"]


def test_a_raw_shard_that_cannot_be_read_is_an_input_error_naming_the_file():
    with pytest.raises(raw_shards.RawInputError, match="x.parquet: not a raw download shard: missing column") as e:
        raw_shards.check_columns(["url", "status"], "x.parquet")
    assert isinstance(e.value, InputError) and "--save_additional_columns" in str(e.value)


# ---- reading for stage 4 ----

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
