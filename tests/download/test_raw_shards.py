"""Stage 3's raw shards as written (wit_builder.download.raw_shards): names, keys, the deterministic tar and
parquet, the per-shard stats and the hints; stage 4's reading side is tested with finalize (tests/finalize)."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from schemas.download import RAW_ROWS
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
