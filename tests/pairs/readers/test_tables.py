"""Table pool files (parquet, jsonl, csv, tsv): columns, bad rows with their numbers, checks before any work."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.pairs.readers.conftest import candidates, read, rejections
from wit_builder.beam.fileio import open_read
from wit_builder.pairs.readers.formats import check_pool_file, read_pool_batches
from wit_builder.pairs.readers.layouts import PoolOptions
from wit_builder.pairs.readers.records import Candidate, PoolFormatError, Rejection

# ---- parquet and jsonl ----

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


def test_unreadable_parquet_is_reported(tmp_path: Path) -> None:
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really parquet")
    assert rejections(read(tmp_path / "broken.parquet")) == [("unreadable_file", 0)]


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


# ---- csv and tsv: RFC 4180 quoting for csv, none for tsv (every data line is a record) ----

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


# ---- columns checked before any work ----

def test_missing_column_names_itself_and_file(tmp_path: Path) -> None:
    pq.write_table(pa.table({"link": ["http://x.example/a.jpg"], "caption": ["a"]}), tmp_path / "t.parquet")
    (tmp_path / "t.jsonl").write_text('{"url": "http://x.example/a.jpg", "text": "a"}\n')
    (tmp_path / "t.tsv").write_text("url\talt\nhttp://x.example/a.jpg\ta\n")
    for name, column in (("t.parquet", "'url'"), ("t.jsonl", "'caption'"), ("t.tsv", "'caption'")):
        with pytest.raises(PoolFormatError, match=column) as error:
            check_pool_file(str(tmp_path / name), open_read, PoolOptions())
        assert str(tmp_path / name) in str(error.value)
    check_pool_file(str(tmp_path / "t.tsv"), open_read, PoolOptions(caption_col="alt"))


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
    for name in ("dup.parquet", "dup.csv", "dup.tsv"):
        with pytest.raises(PoolFormatError, match="'caption' appears 2 times") as error:
            check_pool_file(str(tmp_path / name), open_read, PoolOptions())
        assert str(tmp_path / name) in str(error.value)


def test_jsonl_wrong_types_are_bad_records_on_every_line(tmp_path: Path) -> None:
    """A url or caption that is not a string is a bad record of its line, first line or line 1,101 (issue 23:
    it used to refuse the whole run when it was in the first 1,000 lines)."""
    path = tmp_path / "t.jsonl"
    lines = [json.dumps({"url": f"http://x.example/{i}.jpg", "caption": f"c {i}"}) for i in range(1200)]
    lines[0] = json.dumps({"url": "http://x.example/0.jpg", "caption": 7})
    lines[5] = json.dumps({"url": 12, "caption": "number url"})
    lines[1100] = json.dumps({"url": ["http://x.example/l.jpg"], "caption": "late list"})
    path.write_text("\n".join(lines) + "\n")
    check_pool_file(str(path), open_read, PoolOptions())
    items = read(path)
    assert rejections(items) == [("wrong_type", 0), ("wrong_type", 5), ("wrong_type", 1100)]
    assert len(candidates(items)) == 1197
    bad = [item for item in items if isinstance(item, Rejection)]
    assert "'url' holds a int" in bad[1].detail and bad[1].source_file == str(path)


@pytest.mark.parametrize("line", [0, 999, 1000, 4999])
def test_jsonl_repeated_key_is_a_bad_record_wherever_it_is(tmp_path: Path, line: int) -> None:
    """``{"caption": "a", "caption": "b"}`` is valid JSON whose meaning is open (Python keeps the last): a bad
    record with its line, on the first line and after the first 1,000 alike; other lines are read."""
    path = tmp_path / "t.jsonl"
    lines = [json.dumps({"url": f"http://x.example/{i}.jpg", "caption": f"c {i}"}) for i in range(5000)]
    lines[line] = '{"url": "http://x.example/d.jpg", "caption": "first", "caption": "second"}'
    path.write_text("\n".join(lines) + "\n")
    check_pool_file(str(path), open_read, PoolOptions())
    items = read(path)
    assert rejections(items) == [("malformed_record", line)] and len(candidates(items)) == 4999
    bad = next(item for item in items if isinstance(item, Rejection))
    assert f"line {line + 1}: key 'caption' appears 2 times" in bad.detail


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_lone_surrogate_escape_is_a_bad_record(tmp_path: Path, fmt: str) -> None:
    """``"\\ud800"`` is valid JSON but no text (it cannot be encoded to write the pairs): a ``non_utf8`` bad
    record with its line, in the caption or the url; the records around it are read."""
    path = tmp_path / f"t.{fmt}"
    if fmt == "jsonl":
        path.write_text('{"url": "http://x.example/1.jpg", "caption": "ok one"}\n'
                        '{"url": "http://x.example/2.jpg", "caption": "bad \\ud800 caption"}\n'
                        '{"url": "http://x.example/\\udfff.jpg", "caption": "bad url"}\n'
                        '{"url": "http://x.example/3.jpg", "caption": "ok \\ud83d\\ude00 pair"}\n')
    else:  # the csv reader's own surrogate escapes (undecodable bytes) take the same way out
        path.write_bytes(b"url,caption\nhttp://x.example/1.jpg,ok one\nhttp://x.example/2.jpg,bad \xff caption\n"
                         b"http://x.example/9.jpg,bad url\nhttp://x.example/3.jpg,ok \xf0\x9f\x98\x80 pair\n")
    items = read(path)
    assert [caption for _, caption in candidates(items)] == (["ok one", "ok \U0001F600 pair"] if fmt == "jsonl" else
                                                       ["ok one", "bad url", "ok \U0001F600 pair"])
    assert ("non_utf8", 1) in rejections(items)
    if fmt == "jsonl":
        assert rejections(items) == [("non_utf8", 1), ("non_utf8", 2)]
