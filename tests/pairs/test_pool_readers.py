"""Pool readers: WAT files written with warcio, url/caption tables, and every kind of bad input."""

from __future__ import annotations

import csv
import gzip
import itertools
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.build_pairs_fixtures import WarcBuilder, WatBuilder, img
from wit_builder.beam.fileio import open_read
from wit_builder.core.table_checks import ColumnTypeError, check_pairs_schema
from wit_builder.pairs.pool_readers import (
    LAYOUTS,
    Candidate,
    PoolFormatError,
    PoolOptions,
    Rejection,
    check_pool_file,
    check_table_columns,
    detect_format,
    parse_layout,
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


@pytest.mark.parametrize("kind", ["binary_view", "dictionary"])
def test_parquet_binary_view_and_dictionary_binary_columns_decode(tmp_path: Path, kind: str) -> None:
    """Binary columns the schema check accepts (binary_view, dictionary<binary>) decode as UTF-8 like binary:
    a valid value is a candidate, only undecodable bytes are non_utf8 (both readers)."""
    from wit_builder.pairs.pool_readers import read_pool_batches

    values = pa.array(["caf\u00e9 dog".encode(), b"caf\xe9"], pa.binary())
    column = values.cast(pa.binary_view()) if kind == "binary_view" else values.dictionary_encode()
    pq.write_table(pa.table({"url": ["http://b.example/1.jpg", "http://b.example/2.jpg"], "caption": column}),
                   tmp_path / "bin.parquet")
    items = read(tmp_path / "bin.parquet")
    assert candidates(items) == [("http://b.example/1.jpg", "café dog")]
    assert rejections(items) == [("non_utf8", 1)]
    batches = list(read_pool_batches(str(tmp_path / "bin.parquet"), open_read, PoolOptions()))
    assert [(c.url, c.caption) for b in batches for c in b.candidates()] == candidates(items)
    assert [(r.reason, r.source_record) for b in batches for r in b.rejections] == rejections(items)


def test_url_and_caption_cannot_be_one_column() -> None:
    """One column named for both (with a header too) is refused up front, not an IndexError mid-pipeline."""
    for spec in ({"url_col": "text", "caption_col": "text"}, {"url_col": "1", "caption_col": "1", "header": False}):
        with pytest.raises(ValueError, match="same column"):
            PoolOptions(**spec)
    with pytest.raises(ValueError, match="same column"):
        parse_layout("url=TEXT,caption=TEXT")


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


@pytest.mark.parametrize("fmt, delimiter", [("csv", ",")])
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
    assert detect_format("CC-MAIN-x.warc.gz") == "warc"
    with pytest.raises(PoolFormatError, match="WET"):
        detect_format("CC-MAIN-x.warc.wet.gz")
    with pytest.raises(PoolFormatError, match="--pool-format"):
        detect_format("pool.txt")
    with pytest.raises(ValueError):
        PoolOptions(fmt="xml")


# ---- TSV: no quoting; every data line is a record ----

def test_tsv_quotes_are_ordinary_characters(tmp_path: Path) -> None:
    rows = [
        '"Quoted" start of a caption\thttp://t.example/0.jpg',
        'a 12" vinyl record\thttp://t.example/1.jpg',
        'plain caption\thttp://t.example/2.jpg',
        '"unbalanced quote\thttp://t.example/3.jpg',
        'the last "one"\thttp://t.example/4.jpg',
    ]
    path = tmp_path / "pool.tsv"
    path.write_text("caption\turl\n" + "\n".join(rows) + "\n", encoding="utf-8")
    items = read(path)
    assert len(items) == 5  # records == data lines
    assert candidates(items) == [(f"http://t.example/{i}.jpg", row.split("\t")[0]) for i, row in enumerate(rows)]


def test_tsv_bad_lines_accounted_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "pool.tsv.gz"
    body = b"url\tcaption\nhttp://t.example/0.jpg\tzero\n\nno tab here\nhttp://t.example/3.jpg\tcaf\xe9\r\n" \
           b"http://t.example/4.jpg\tfour\textra\n"
    path.write_bytes(gzip.compress(body))
    items = read(path)
    assert len(items) == body.count(b"\n") - 1  # every data line, the header excepted
    assert candidates(items) == [("http://t.example/0.jpg", "zero"), ("http://t.example/4.jpg", "four")]
    bad = [r for r in items if isinstance(r, Rejection)]
    assert [(r.reason, r.source_record) for r in bad] == [("malformed_record", 1), ("malformed_record", 2),
                                                          ("non_utf8", 3)]
    assert [r.detail.split(":")[0] for r in bad] == ["line 3", "line 4", "line 5"]


def test_csv_keeps_rfc4180_quoting_and_counts_rows(tmp_path: Path) -> None:
    path = tmp_path / "pool.csv"
    path.write_text('url,caption\nhttp://c.example/0.jpg,"a ""12"" vinyl, on\ntwo lines"\n'
                    'http://c.example/1.jpg,plain\n', encoding="utf-8")
    assert candidates(read(path)) == [("http://c.example/0.jpg", 'a "12" vinyl, on two lines'),
                                      ("http://c.example/1.jpg", "plain")]


# ---- headerless tables and presets ----

def test_headerless_cc3m_and_cc12m_layouts(tmp_path: Path) -> None:
    # Conceptual Captions ship without a header: CC3M caption<TAB>url, CC12M url<TAB>caption.
    (tmp_path / "Train_GCC-training.tsv").write_text(
        "a very typical bus station\thttp://lh6.example/-bus.jpg\n"
        "sierra looked stunning in this top and this skirt\thttp://cdn.example/skirt.jpg\n", encoding="utf-8")
    (tmp_path / "cc12m.tsv").write_text(
        "http://www.example/a.jpg\t<PERSON> with a \"cat\" on the lawn\n", encoding="utf-8")
    cc3m = read(tmp_path / "Train_GCC-training.tsv", fmt="tsv", header=False, url_col="1", caption_col="0")
    assert candidates(cc3m) == [("http://lh6.example/-bus.jpg", "a very typical bus station"),
                                ("http://cdn.example/skirt.jpg", "sierra looked stunning in this top and this skirt")]
    preset = LAYOUTS["cc3m"]
    assert candidates(read(tmp_path / "Train_GCC-training.tsv", fmt=preset.fmt, header=preset.header,
                           url_col=preset.url_col, caption_col=preset.caption_col)) == candidates(cc3m)
    options = PoolOptions(layouts=(("cc12m*", parse_layout("cc12m")),))
    items = list(read_pool_file(str(tmp_path / "cc12m.tsv"), open_read, options))
    assert candidates(items) == [("http://www.example/a.jpg", '<PERSON> with a "cat" on the lawn')]
    # Without --no-header the first data row would be the header: the check says so before any work.
    with pytest.raises(PoolFormatError, match="'url'"):
        check_pool_file(str(tmp_path / "cc12m.tsv"), open_read, PoolOptions())
    with pytest.raises(ValueError, match="position"):
        PoolOptions(header=False, url_col="url", caption_col="0")
    with pytest.raises(ValueError):
        parse_layout("cc99m")


def test_mixed_pool_per_input_layouts(tmp_path: Path) -> None:
    pq.write_table(pa.table({"URL": ["http://l.example/1.jpg"], "TEXT": ["laion row"], "similarity": [0.3]}),
                   tmp_path / "laion-part-0.parquet")
    pq.write_table(pa.table({"uid": ["a" * 32], "url": ["http://d.example/1.jpg"], "text": ["datacomp row"]}),
                   tmp_path / "datacomp-0.parquet")
    pq.write_table(pa.table({"caption": ["img2dataset row"], "url": ["http://i.example/1.jpg"], "key": ["000"],
                             "status": ["success"]}), tmp_path / "00000.parquet")
    (tmp_path / "own.csv").write_text("image,alt\nhttp://o.example/1.jpg,own row\n")
    options = PoolOptions(layouts=(
        ("laion-*.parquet", parse_layout("laion")),
        (str(tmp_path / "datacomp-*"), parse_layout("datacomp")),
        ("*.csv", parse_layout("url=image,caption=alt")),
    ))
    got = []
    for name in ("laion-part-0.parquet", "datacomp-0.parquet", "00000.parquet", "own.csv"):
        path = str(tmp_path / name)
        check_pool_file(path, open_read, options)
        got += candidates(read_pool_file(path, open_read, options))
    assert got == [("http://l.example/1.jpg", "laion row"), ("http://d.example/1.jpg", "datacomp row"),
                   ("http://i.example/1.jpg", "img2dataset row"), ("http://o.example/1.jpg", "own row")]
    with pytest.raises(PoolFormatError, match="'URL'"):  # without the mapping, laion's columns are missing
        check_pool_file(str(tmp_path / "laion-part-0.parquet"), open_read, PoolOptions())


def test_utf8_bom_is_not_a_bad_first_record(tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    (tmp_path / "b.jsonl").write_bytes(bom + b'{"url": "http://b.example/0.jpg", "caption": "zero"}\n')
    (tmp_path / "b.csv").write_bytes(bom + b"url,caption\nhttp://b.example/0.jpg,zero\n")
    (tmp_path / "b.tsv").write_bytes(bom + b"url\tcaption\nhttp://b.example/0.jpg\tzero\n")
    (tmp_path / "h.tsv").write_bytes(bom + b"zero\thttp://b.example/0.jpg\n")
    for name in ("b.jsonl", "b.csv", "b.tsv"):
        check_pool_file(str(tmp_path / name), open_read, PoolOptions())
        assert read(tmp_path / name) == [Candidate("http://b.example/0.jpg", "zero", str(tmp_path / name), 0)]
    items = read(tmp_path / "h.tsv", header=False, url_col="1", caption_col="0")
    assert candidates(items) == [("http://b.example/0.jpg", "zero")] and len(items) == 1


# ---- WAT entity URLs, WARC pages ----

def test_wat_url_entities_decoded_like_alt(tmp_path: Path) -> None:
    wat = WatBuilder()
    wat.page("http://e.example/p", [img("/img?id=1&amp;size=large&#38;v=2", "A &amp; B"),
                                    img("/plain?a=1&b=2", "raw ampersand")])
    assert candidates(read(wat.write(tmp_path / "e.warc.wat.gz"))) == [
        ("http://e.example/img?id=1&size=large&v=2", "A & B"),
        ("http://e.example/plain?a=1&b=2", "raw ampersand"),
    ]


def test_warc_pages_relative_urls_base_and_non_html(tmp_path: Path) -> None:
    warc = WarcBuilder()
    warc.request("https://news.example/a/story.html")
    page = warc.response("https://news.example/a/story.html", (
        b"<!doctype html><html><head><title>x</title></head><body>"
        b"<img src='../img/cat.jpg' alt='A cat &amp; a dog'>"
        b"<IMG SRC=\"//cdn.example/p.png?w=1&amp;h=2\" ALT=\"Protocol relative\">"
        b"<img src='data:image/png;base64,AAAA' alt='inline'>"
        b"<img src='no-alt.jpg'>"
        b"<p>text <img alt='unclosed' src=/abs.jpg></p></body></html>"))
    based = warc.response("http://blog.example/2020/post/", (
        "<html><head><meta charset='windows-1252'><base href='/static/'></head>"
        "<body><img src=\"pic.jpg\" alt=\"Caf\xe9 au lait\"></body></html>").encode("cp1252"),
        content_type="text/html")
    image = warc.response("https://news.example/img/cat.jpg", b"\xff\xd8\xff\xe0 jpeg bytes", "image/jpeg")
    path = warc.write(tmp_path / "CC-MAIN-1.warc.gz")
    check_pool_file(str(path), open_read, PoolOptions())
    items = read(path)
    assert candidates(items) == [
        ("https://news.example/img/cat.jpg", "A cat & a dog"),
        ("https://cdn.example/p.png?w=1&h=2", "Protocol relative"),
        ("https://news.example/abs.jpg", "unclosed"),
        ("http://blog.example/static/pic.jpg", "Café au lait"),  # <base href> wins over the page URL
    ]
    assert rejections(items) == [("data_uri", page), ("empty_caption", page), ("non_html", image)]
    assert {c.source_record for c in items if isinstance(c, Candidate)} == {page, based}
    assert items[0].page_url == "https://news.example/a/story.html"


def test_warc_cut_or_corrupt_record_is_reported_not_read_in_part(tmp_path: Path) -> None:
    """warcio reads a cut or corrupt gzip member quietly (a short block): the record is one truncated_file /
    malformed_record at its offset, none of its links count, and reading goes on after a corrupt member."""
    warc = WarcBuilder()
    pages = [warc.response(f"https://p{i}.example/", "".join(
        f"<img src='/{i}/{k}.jpg' alt='picture {k} of page {i} {k * 7919 % 1000}'>" for k in range(300)).encode())
        for i in range(3)]
    data = warc.bytes()
    first = [c for c in candidates(read(warc.write(tmp_path / "whole.warc.gz"))) if "p0." in c[0]]
    assert len(first) == 300
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(data[: (pages[1] + pages[2]) // 2])
    items = read(cut)
    assert candidates(items) == first
    assert [(r.reason, r.source_record) for r in items if isinstance(r, Rejection) and r.is_bad] == \
        [("truncated_file", pages[1])]
    corrupt = bytearray(data)
    middle = (pages[1] + pages[2]) // 2
    corrupt[middle : middle + 8] = bytes(b ^ 0xFF for b in corrupt[middle : middle + 8])
    (tmp_path / "corrupt.warc.gz").write_bytes(bytes(corrupt))
    items = read(tmp_path / "corrupt.warc.gz")
    assert {c.source_record for c in items if isinstance(c, Candidate)} == {pages[0], pages[2]}
    assert len(candidates(items)) == 600
    assert [(r.reason, r.source_record) for r in items if isinstance(r, Rejection) and r.is_bad] == \
        [("malformed_record", pages[1])]


def test_record_extent_of_a_large_member_followed_by_more_data(tmp_path: Path) -> None:
    """A gzip member that inflates past one 64 KiB chunk, with bytes after it in the same read: its extent
    ends where the member ends (zlib keeps the rest in unconsumed_tail after the end: the loop once spun forever,
    so a WAT whose large last record had trailing bytes never finished)."""
    from wit_builder.pairs.warc_records import record_extent

    wat = WatBuilder()
    big = wat.page("http://big.example/", [img(f"/{k}.jpg", f"picture number {k}") for k in range(3000)])
    small = wat.page("http://small.example/", [img("a.jpg", "x")])
    path = tmp_path / "big.warc.wat.gz"
    path.write_bytes(wat.bytes() + b"trailing junk")
    with open(path, "rb") as fh:
        assert record_extent(fh, big) == ("whole", small)
    (tmp_path / "one.warc.wat.gz").write_bytes(wat.bytes()[:small] + b"trailing junk")
    items = read(tmp_path / "one.warc.wat.gz")
    assert len(candidates(items)) == 3000
    assert [r.reason for r in items if isinstance(r, Rejection) and r.is_bad] == ["malformed_record"]  # the junk


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


# ---- column types checked before any work ----

@pytest.mark.parametrize("table, column, said", [
    (pa.table({"url": ["http://x.example/a.jpg"], "caption": [42]}), "caption", "int64"),
    (pa.table({"url": [["http://x.example/a.jpg"]], "caption": ["a"]}), "url", "list<element: string>"),
    (pa.table({"url": ["http://x.example/a.jpg"], "caption": [1.5]}), "caption", "double"),
])
def test_parquet_wrong_column_types(tmp_path: Path, table: pa.Table, column: str, said: str) -> None:
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(PoolFormatError) as error:
        check_pool_file(str(tmp_path / "t.parquet"), open_read, PoolOptions())
    message = str(error.value)
    assert str(tmp_path / "t.parquet") in message and repr(column) in message and said in message


def test_duplicate_column_names_are_refused(tmp_path: Path) -> None:
    table = pa.Table.from_arrays([pa.array(["http://x.example/a.jpg"]), pa.array(["first"]), pa.array(["second"])],
                                 names=["url", "caption", "caption"])
    pq.write_table(table, tmp_path / "dup.parquet")
    (tmp_path / "dup.csv").write_text("url,caption,caption\nhttp://x.example/a.jpg,first,second\n")
    (tmp_path / "dup.tsv").write_text("caption\turl\tcaption\nfirst\thttp://x.example/a.jpg\tsecond\n")
    (tmp_path / "dup.jsonl").write_text('{"url": "http://x.example/a.jpg", "caption": "a", "caption": "b"}\n')
    for name in ("dup.parquet", "dup.csv", "dup.tsv", "dup.jsonl"):
        with pytest.raises(PoolFormatError, match="'caption' appears 2 times") as error:
            check_pool_file(str(tmp_path / name), open_read, PoolOptions())
        assert str(tmp_path / name) in str(error.value)


def test_jsonl_wrong_types_checked_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"url": "http://x.example/a.jpg", "caption": 7}\n')
    with pytest.raises(PoolFormatError, match=r"line 1: column 'caption' holds a int"):
        check_pool_file(str(path), open_read, PoolOptions())
    lines = [json.dumps({"url": f"http://x.example/{i}.jpg", "caption": f"c {i}"}) for i in range(1200)]
    lines[1100] = json.dumps({"url": ["http://x.example/l.jpg"], "caption": "late list"})  # past the check
    path.write_text("\n".join(lines) + "\n")
    check_pool_file(str(path), open_read, PoolOptions())
    items = read(path)
    assert rejections(items) == [("wrong_type", 1100)] and len(candidates(items)) == 1199


def test_pairs_schema_check_for_download() -> None:
    from schemas.pairs import PAIRS

    check_pairs_schema("pairs.parquet", PAIRS)
    bad = pa.schema([("uid", pa.int64()), ("url", pa.string()), ("caption", pa.string()),
                     ("queries", pa.list_(pa.string()))])
    with pytest.raises(ColumnTypeError, match=r"pairs.parquet: column 'uid' has type int64, expected string"):
        check_pairs_schema("pairs.parquet", bad)
    bad = pa.schema([("uid", pa.string()), ("url", pa.string()), ("caption", pa.string()), ("queries", pa.string())])
    with pytest.raises(ColumnTypeError, match=r"column 'queries' has type string, expected list<string>"):
        check_pairs_schema("p.parquet", bad)
    with pytest.raises(ColumnTypeError, match=r"no column 'queries'"):
        check_pairs_schema("p.parquet", pa.schema([("uid", pa.string()), ("url", pa.string()),
                                                   ("caption", pa.string())]))


@pytest.mark.parametrize("url", [
    "http://a.example", "https://a.example?x=1", "https://a.example/?x=1", "http://a.example/p/q.jpg?x=1&y=2",
    "http://a.example//double/slash", "http://a_b.example/x@y.jpg", "http://a.example/caf\u00e9.jpg",
    "http://1.2.3.4/x", "http://a.example/p%20q", "http://a.example/[x]", "http://a.example/a;b,c",
    # not plain: the general path decides
    "HTTP://A.Example/X", "http://a.example:80/x", "http://a.example:8080/x", "http://u:p@a.example/x",
    "http://a.example./x", "http://a.example/x#frag", "http://a.example/x\\y", "https://[::1]/x",
    "http://a.example:bad/x", "http://a.example/x\ty",
])
def test_plain_url_fast_path_equals_normalize_url(url: str) -> None:
    from wit_builder.core.uid import normalize_url
    from wit_builder.pairs.pool_readers import _PLAIN_URL, clean_pair

    try:
        expected: object = normalize_url(url)
    except ValueError:
        expected = "invalid_url"
    got = clean_pair(url, "caption", None, 2048)
    assert (got[0] if isinstance(got, tuple) else got) == expected
    # With a page base (WAT/WARC) an absolute URL resolves to itself, as urljoin would have it.
    from urllib.parse import urljoin

    try:
        joined: object = normalize_url(urljoin("https://page.example/dir/index.html", url))
    except ValueError:
        joined = "invalid_url"
    got = clean_pair(url, "caption", "https://page.example/dir/index.html", 2048)
    assert (got[0] if isinstance(got, tuple) else got) == joined
    if _PLAIN_URL.match(url):
        assert "#" not in url and ":" not in url.split("//", 1)[1].split("/", 1)[0]


# ---- the stage's column-wise reader: the same answers as the per-record path ----

URL_PARTS = ["http://", "https://", "HTTP://", "ftp://", "data:", "//", "", "a.example", "A.Example", "b-c.d_e",
             "x..y", "h.", "[::1]", ":8080", ":80", ":abc", "/p", "/P/q", "?q=1", "#frag", " ", "\t", "\\", "é",
             "\xa0", "\x00", "\x7f", "/%20", "user@", "/a b", "'"]
CAPTION_PARTS = ["a", "Dog", "  ", "\t", "\n", "\x1c", "\x0b", "\xa0", "\u2028", "e\u0301", "é", "ｎ", "'s", "-",
                 ".", "", " x ", "\u3000"]
# Mostly near-plain URLs (the column path's rows), with every kind of flaw now and then.
SCHEMES = ["http://", "https://", "HTTP://", " https://", "https:/"]
HOSTS = ["a.example", "b-c.d_e", "x..y", "A.Example", "Ab.example", "h.", "h", "a.b:80", "é.x", "u@h", ".h"]
RESTS = ["/p", "/P/q", "?q=1", "/", "#f", "/a b", "/é", "/%20", "\\", " ", "\x7f", "&amp;", "\t", "/x\n"]
plain_urls = st.builds(lambda scheme, host, rest: scheme + host + "".join(rest), st.sampled_from(SCHEMES),
                       st.sampled_from(HOSTS), st.lists(st.sampled_from(RESTS), max_size=3))
urls_st = st.one_of(st.none(), plain_urls, plain_urls, plain_urls,
                    st.lists(st.sampled_from(URL_PARTS), max_size=6).map("".join), st.text(max_size=30))
captions_st = st.one_of(st.none(), st.lists(st.sampled_from(CAPTION_PARTS), max_size=8).map("".join),
                        st.lists(st.sampled_from(CAPTION_PARTS[:7]), max_size=8).map("".join), st.text(max_size=30))


def per_record(path: str, first: int, urls: list, captions: list, max_url_length: int) -> list:
    """What ``_judge`` (read_pool_file's rule for a table row) says for each row."""
    from wit_builder.pairs.pool_readers import _judge

    options = PoolOptions(max_url_length=max_url_length)
    return [_judge(u, c, None, options, path, first + i) for i, (u, c) in enumerate(zip(urls, captions, strict=True))]


@settings(max_examples=400, deadline=None)
@given(rows=st.lists(st.tuples(urls_st, captions_st), min_size=1, max_size=30),
       max_url_length=st.sampled_from([16, 20, 2048]), first=st.integers(0, 10**6))
def test_column_cleaning_equals_the_per_record_rule(rows, max_url_length: int, first: int) -> None:
    """clean_columns (vectorized for plain ASCII rows, ``_judge`` for the rest) gives every row the answer
    ``_judge`` gives it: the same Candidate (url, caption, raw caption, record) or the same Rejection."""
    from wit_builder.pairs.pool_readers import clean_columns

    urls, captions = [u for u, _ in rows], [c for _, c in rows]
    batch = clean_columns("f.parquet", first, pa.array(urls, pa.string()), pa.array(captions, pa.string()),
                          max_url_length)
    expected = per_record("f.parquet", first, urls, captions, max_url_length)
    assert list(batch.candidates()) == [c for c in expected if isinstance(c, Candidate)]
    assert [c.raw_caption for c in batch.candidates()] == [c.raw_caption for c in expected
                                                           if isinstance(c, Candidate)]
    assert list(batch.rejections) == [r for r in expected if isinstance(r, Rejection)]


@pytest.mark.parametrize("max_url_length", [16, 24, 2048])
def test_column_cleaning_equals_the_per_record_rule_on_every_combination(max_url_length: int) -> None:
    """Every scheme x host x (up to two) path parts, against captions with every kind of space: one batch."""
    from wit_builder.pairs.pool_readers import clean_columns

    urls = [scheme + host + a + b for scheme in SCHEMES for host in HOSTS for a in ["", *RESTS] for b in ["", *RESTS]]
    captions = [" ".join(parts) for parts in itertools.product(CAPTION_PARTS[:9], repeat=2)]
    captions = [captions[i % len(captions)] for i in range(len(urls))]
    batch = clean_columns("f", 7, pa.array(urls), pa.array(captions), max_url_length)
    expected = per_record("f", 7, urls, captions, max_url_length)
    assert list(batch.candidates()) == [c for c in expected if isinstance(c, Candidate)]
    assert list(batch.rejections) == [r for r in expected if isinstance(r, Rejection)]
    assert len(batch) > 1000


def test_column_cleaning_covers_the_common_fixes() -> None:
    """Plain rows take the column path with its two fixes: "/" after a bare host (also before a query),
    ASCII whitespace runs folded; the rest goes through the per-record rule (same answers)."""
    from wit_builder.pairs.pool_readers import clean_columns

    urls = ["https://a.example", "https://a.example?x=1", "https://a.example/p?x=1", "HTTPS://A.example/p",
            "https://a.example:443/p", "data:image/png;base64,AAAA", None, "https://a.example/é"]
    captions = ["a  dog\t\n", "x", "Café", "c", "d", "e", "f", "\xa0g\xa0"]
    batch = clean_columns("f", 0, pa.array(urls), pa.array(captions), 2048)
    assert [(c.url, c.caption, c.source_record) for c in batch.candidates()] == [
        ("https://a.example/", "a dog", 0), ("https://a.example/?x=1", "x", 1), ("https://a.example/p?x=1", "Café", 2),
        ("https://a.example/p", "c", 3), ("https://a.example/p", "d", 4), ("https://a.example/é", "g", 7)]
    assert [(r.reason, r.source_record) for r in batch.rejections] == [("data_uri", 5), ("missing_url", 6)]


@pytest.mark.parametrize("column_type", [pa.string(), pa.large_string(), pa.binary(), "dictionary"])
def test_batches_read_what_read_pool_file_reads(tmp_path: Path, column_type) -> None:
    """read_pool_batches over parquet (string, large_string, binary with a non-UTF-8 value, dictionary), jsonl
    and tsv pools: the candidates and rejections of read_pool_file, batch after batch."""
    from wit_builder.pairs.pool_readers import read_pool_batches

    urls = [f"https://h{i % 7}.example/{i}.jpg" if i % 11 else f"HTTP://H.example:80/{i}" for i in range(300)]
    urls[5], urls[17], urls[40] = None, "data:x", "x" * 3000
    captions = [f"caption  {i}" if i % 13 else f"Cafe\u0301 {i}" for i in range(300)]
    captions[9], captions[23] = "   ", None
    if column_type == "dictionary":
        table = pa.table({"url": pa.array(urls).dictionary_encode(), "caption": pa.array(captions).dictionary_encode()})
    elif column_type == pa.binary():
        values = [c.encode() if c is not None else None for c in captions]
        values[30] = b"\xff\xfe bad"
        table = pa.table({"url": pa.array(urls, pa.string()), "caption": pa.array(values, pa.binary())})
    else:
        table = pa.table({"url": pa.array(urls, column_type), "caption": pa.array(captions, column_type)})
    parquet = tmp_path / "pool.parquet"
    pq.write_table(table, parquet, row_group_size=64)
    jsonl = tmp_path / "pool.jsonl"
    jsonl.write_text("".join(json.dumps({"url": u, "caption": c}) + "\n" for u, c in zip(urls, captions, strict=True))
                     + "not json\n")
    for path in (parquet, jsonl):
        batches = list(read_pool_batches(str(path), open_read, PoolOptions(), rows=100))
        assert len(batches) >= 3
        expected = read(path)
        assert [c for b in batches for c in b.candidates()] == [c for c in expected if isinstance(c, Candidate)]
        assert [r for b in batches for r in b.rejections] == [r for r in expected if isinstance(r, Rejection)]
        assert sum(len(b) for b in batches) + sum(len(b.rejections) for b in batches) == 301 - (path == parquet)


def test_batches_report_an_unreadable_parquet(tmp_path: Path) -> None:
    from wit_builder.pairs.pool_readers import read_pool_batches

    path = tmp_path / "cut.parquet"
    path.write_bytes(b"PAR1" + b"\x00" * 50)
    batches = list(read_pool_batches(str(path), open_read, PoolOptions()))
    assert [(r.reason, r.source_record) for b in batches for r in b.rejections] == \
        [(r.reason, r.source_record) for r in read(path)] == [("unreadable_file", 0)]
