"""Pool readers: WAT files written with warcio, url/caption tables, and every kind of bad input."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.common import open_read
from tests.build_pairs_fixtures import WatBuilder, img
from wit_builder.pool_readers import (
    Candidate,
    PoolFormatError,
    PoolOptions,
    Rejection,
    check_table_columns,
    detect_format,
    read_pool_file,
)


def read(path: Path, **options) -> list[Candidate | Rejection]:
    return list(read_pool_file(str(path), open_read, PoolOptions(**options)))


def candidates(items) -> list[tuple[str, str]]:
    return [(c.url, c.caption) for c in items if isinstance(c, Candidate)]


def rejections(items) -> list[tuple[str, int]]:
    return [(r.reason, r.source_record) for r in items if isinstance(r, Rejection)]


# ---- WAT ----

def test_wat_links_resolved_and_filtered(tmp_path: Path) -> None:
    wat = WatBuilder()
    wat.request_record("https://shop.example/a/page.html")  # no HTML metadata: not a pair, not an error
    first = wat.page("https://shop.example/a/page.html", [
        img("../img/red-dog.jpg", "A red  dog\non grass"),            # relative, whitespace folded
        img("//cdn.example/x.png", "Protocol-relative"),
        img("https://Other.Example:443/b.jpg#frag", "Tom &amp; Jerry"),  # host case, port, fragment, entity
        img("data:image/png;base64,iVBORw0KGgo=", "inline"),
        img("photo.jpg", ""),
        img("photo2.jpg", None),                                       # no alt attribute at all
        img("ftp://files.example/p.jpg", "ftp image"),
        img("javascript:void(0)", "script"),
        {"path": "A@/href", "url": "/next", "text": "next page"},      # not an image
    ])
    second = wat.page("http://blog.example/2020/post/", [img("pic.jpg", "Sunset")], base="/static/")
    items = read(wat.write(tmp_path / "CC-MAIN-1.warc.wat.gz"))
    assert candidates(items) == [
        ("https://shop.example/img/red-dog.jpg", "A red dog on grass"),
        ("https://cdn.example/x.png", "Protocol-relative"),
        ("https://other.example/b.jpg", "Tom & Jerry"),
        ("http://blog.example/static/pic.jpg", "Sunset"),  # <base href> wins over the page URL
    ]
    assert rejections(items) == [("data_uri", first), ("empty_caption", first), ("empty_caption", first),
                                 ("non_http_url", first), ("non_http_url", first)]
    assert {c.source_record for c in items if isinstance(c, Candidate)} == {first, second}
    assert items[0].page_url == "https://shop.example/a/page.html"


def test_wat_bad_records_reported_rest_processed(tmp_path: Path) -> None:
    wat = WatBuilder()
    wat.page("http://a.example/", [img("1.jpg", "first")])
    long_url = "http://a.example/" + "x" * 10_000
    long_at = wat.page("http://a.example/long", [img(long_url, "ten kilobytes"), img("2.jpg", "second")])
    bad_utf8_at = wat.raw("http://a.example/latin1", b'{"Envelope": {"x": "caf\xe9"}}')
    bad_json_at = wat.raw("http://a.example/json", b'{"Envelope": ')
    wat.page("http://a.example/3", [img("3.jpg", "third")])
    good = wat.bytes()
    # A gzip member that holds no WARC record, then a member whose bytes were damaged in transit.
    junk = gzip.compress(b"this is not a WARC record\r\n\r\n")
    damaged = bytearray(_one_member("http://a.example/4", "fourth"))
    damaged[40:80] = bytes(40)
    tail = _one_member("http://a.example/5", "fifth")
    path = tmp_path / "bad.warc.wat.gz"
    path.write_bytes(good + junk + bytes(damaged) + tail)
    items = read(path)
    assert [c for _, c in candidates(items)] == ["first", "second", "third", "fifth"]
    reported = rejections(items)
    assert reported[:3] == [("url_too_long", long_at), ("non_utf8", bad_utf8_at), ("malformed_json", bad_json_at)]
    # One report for the damaged stretch; reading resumes at the next member that starts a WARC record.
    assert reported[3:] == [("malformed_record", len(good))]
    resumed_at = len(good) + len(junk) + len(damaged)
    assert items[-2].detail.endswith(f"resumed at offset {resumed_at}")
    too_long = next(r for r in items if isinstance(r, Rejection) and r.reason == "url_too_long")
    assert too_long.detail == f"{len(long_url)} chars" and too_long.is_bad


def _one_member(page: str, alt: str) -> bytes:
    wat = WatBuilder()
    wat.page(page, [img("i.jpg", alt)])
    return wat.bytes()


def test_wat_truncated_gzip(tmp_path: Path) -> None:
    wat = WatBuilder()
    for i in range(3):
        wat.page(f"http://t.example/{i}", [img(f"{i}.jpg", f"image {i}")])
    path = tmp_path / "cut.warc.wat.gz"
    path.write_bytes(wat.bytes()[:-25])  # the download stopped inside the last gzip member
    items = read(path)
    assert [c for _, c in candidates(items)] == ["image 0", "image 1"]
    assert rejections(items) == [("truncated_file", wat.offsets[2])]
    path.write_bytes(wat.bytes()[: wat.offsets[2] + 12])  # cut inside the gzip header itself
    items = read(path)
    assert [c for _, c in candidates(items)] == ["image 0", "image 1"]
    assert rejections(items) == [("truncated_file", wat.offsets[2])]


# ---- tables ----

def test_parquet_with_custom_columns(tmp_path: Path) -> None:
    table = pa.table({
        "URL": ["http://p.example/1.jpg", "http://p.example/2.jpg", None, "http://p.example/3.jpg"],
        "TEXT": ["one", "   ", "three", None],
        "extra": [1, 2, 3, 4],
    })
    pq.write_table(table, tmp_path / "laion.parquet", row_group_size=2)
    items = read(tmp_path / "laion.parquet", url_col="URL", caption_col="TEXT")
    assert candidates(items) == [("http://p.example/1.jpg", "one")]
    assert rejections(items) == [("empty_caption", 1), ("missing_url", 2), ("empty_caption", 3)]


def test_parquet_binary_columns_non_utf8(tmp_path: Path) -> None:
    table = pa.table({"url": [b"http://b.example/1.jpg", b"http://b.example/2.jpg"],
                      "caption": ["caf\u00e9".encode(), b"caf\xe9"]})
    pq.write_table(table, tmp_path / "bin.parquet")
    items = read(tmp_path / "bin.parquet")
    assert candidates(items) == [("http://b.example/1.jpg", "café")]
    assert rejections(items) == [("non_utf8", 1)]


def test_jsonl_gz_bad_lines_and_truncation(tmp_path: Path) -> None:
    lines = [
        json.dumps({"url": "http://j.example/0.jpg", "caption": "zero"}).encode(),
        b"",
        b'{"url": "http://j.example/1.jpg", "caption": "caf\xe9"}',  # latin-1 byte
        b'{"url": "http://j.example/2.jpg", ',
        b'["not", "an", "object"]',
        json.dumps({"url": "http://j.example/" + "y" * 10_000, "caption": "long"}).encode(),
    ] + [json.dumps({"url": f"http://j.example/{i}.jpg", "caption": f"row {i}"}).encode() for i in range(6, 400)]
    blob = gzip.compress(b"\n".join(lines) + b"\n")
    (tmp_path / "ok.jsonl.gz").write_bytes(blob)
    items = read(tmp_path / "ok.jsonl.gz")
    assert rejections(items) == [("non_utf8", 2), ("malformed_json", 3), ("malformed_json", 4), ("url_too_long", 5)]
    assert len(candidates(items)) == 1 + 394
    (tmp_path / "cut.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    items = read(tmp_path / "cut.jsonl.gz")
    assert rejections(items)[-1][0] == "truncated_file"
    kept = candidates(items)
    assert 50 < len(kept) < 395
    assert rejections(items)[-1][1] > len(kept)  # the line where reading stopped


@pytest.mark.parametrize("fmt, delimiter", [("csv", ","), ("tsv", "\t")])
def test_delimited_with_custom_columns(tmp_path: Path, fmt: str, delimiter: str) -> None:
    path = tmp_path / f"pool.{fmt}"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(["id", "image_url", "alt"])
        writer.writerow(["1", "https://c.example/a.jpg", "a quoted, \"multi\"\nline caption"])
        writer.writerow(["2", "https://c.example/b.jpg"])  # short row
        writer.writerow(["3", "mailto:someone@example.com", "mail"])
    with open(path, "ab") as f:
        f.write(f"4{delimiter}https://c.example/c.jpg{delimiter}caf\xe9\r\n".encode("latin-1"))
        f.write(f"5{delimiter}https://c.example/d.jpg{delimiter}last one\r\n".encode())
    items = read(path, url_col="image_url", caption_col="alt")
    assert candidates(items) == [("https://c.example/a.jpg", 'a quoted, "multi" line caption'),
                                 ("https://c.example/d.jpg", "last one")]
    assert rejections(items) == [("malformed_record", 1), ("non_http_url", 2), ("non_utf8", 3)]


def test_missing_column_names_itself_and_file(tmp_path: Path) -> None:
    pq.write_table(pa.table({"link": ["http://x.example/a.jpg"], "caption": ["a"]}), tmp_path / "t.parquet")
    (tmp_path / "t.jsonl").write_text('{"url": "http://x.example/a.jpg", "text": "a"}\n')
    (tmp_path / "t.tsv").write_text("url\talt\nhttp://x.example/a.jpg\ta\n")
    for name, column in (("t.parquet", "'url'"), ("t.jsonl", "'caption'"), ("t.tsv", "'caption'")):
        with pytest.raises(PoolFormatError, match=column) as error:
            check_table_columns(str(tmp_path / name), open_read, PoolOptions())
        assert str(tmp_path / name) in str(error.value)
    check_table_columns(str(tmp_path / "t.tsv"), open_read, PoolOptions(caption_col="alt"))


def test_unreadable_parquet_is_reported(tmp_path: Path) -> None:
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really parquet")
    assert rejections(read(tmp_path / "broken.parquet")) == [("unreadable_file", 0)]


def test_format_detection() -> None:
    assert detect_format("gs://b/CC-MAIN-x.warc.wat.gz") == "wat"
    assert detect_format("a.jsonl.gz") == "jsonl"
    assert detect_format("a.tsv.gz") == "tsv"
    assert detect_format("part-0.parquet") == "parquet"
    assert detect_format("anything", "csv") == "csv"
    with pytest.raises(PoolFormatError, match="--pool-format"):
        detect_format("CC-MAIN-x.warc.gz")  # a WARC, not its WAT: no alt texts without parsing HTML
    with pytest.raises(ValueError):
        PoolOptions(fmt="xml")
