"""The format of a pool file: from its name, and its content checked before any work."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.pairs.conftest import WarcBuilder, WatBuilder, img
from wit_builder.beam.fileio import open_read
from wit_builder.pairs.readers.formats import check_pool_file, detect_format
from wit_builder.pairs.readers.layouts import PoolOptions
from wit_builder.pairs.readers.records import PoolFormatError


def test_format_detection() -> None:
    assert detect_format("gs://b/CC-MAIN-x.warc.wat.gz") == "wat"
    assert detect_format("a.jsonl.gz") == "jsonl"
    assert detect_format("a.tsv.gz") == "tsv"
    assert detect_format("part-0.parquet") == "parquet"
    assert detect_format("anything", "csv") == "csv"
    assert detect_format("CC-MAIN-x.warc.gz") == "warc"
    with pytest.raises(PoolFormatError, match="WET"):
        detect_format("CC-MAIN-x.warc.wet.gz")
    with pytest.raises(PoolFormatError, match="--pool-format"):
        detect_format("pool.txt")
    with pytest.raises(ValueError):
        PoolOptions(fmt="xml")


def test_wrong_pool_format_is_said(tmp_path: Path) -> None:
    warc = WarcBuilder()
    warc.response("http://w.example/", b"<img src=a.jpg alt=x>")
    warc_path = warc.write(tmp_path / "crawl.warc.gz")
    wat = WatBuilder()
    wat.page("http://w.example/", [img("a.jpg", "x")])
    wat_path = wat.write(tmp_path / "crawl.warc.wat.gz")
    pq.write_table(pa.table({"url": ["http://w.example/a.jpg"], "caption": ["x"]}), tmp_path / "p.parquet")
    (tmp_path / "p.jsonl").write_text('{"url": "http://w.example/a.jpg", "caption": "x"}\n')
    cases = [(warc_path, "wat", "a WARC file"), (wat_path, "warc", "a WAT file"),
             (tmp_path / "p.parquet", "csv", "a parquet file"), (tmp_path / "p.jsonl", "parquet", "JSON lines"),
             (warc_path, "tsv", "a WARC file")]
    for path, fmt, said in cases:
        with pytest.raises(PoolFormatError, match=said) as error:
            check_pool_file(str(path), open_read, PoolOptions(fmt=fmt))
        assert str(path) in str(error.value) and fmt in str(error.value)
