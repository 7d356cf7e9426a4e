"""The column-wise form: clean_columns and read_pool_batches give the answers of the per-record rule."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.pairs.readers.conftest import read
from wit_builder.beam.fileio import open_read
from wit_builder.pairs.readers.clean import judge
from wit_builder.pairs.readers.columns import clean_columns
from wit_builder.pairs.readers.formats import read_pool_batches
from wit_builder.pairs.readers.layouts import PoolOptions
from wit_builder.pairs.readers.records import Candidate, Rejection

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
    """What ``judge`` (read_pool_file's rule for a table row) says for each row."""
    options = PoolOptions(max_url_length=max_url_length)
    return [judge(u, c, None, options, path, first + i) for i, (u, c) in enumerate(zip(urls, captions, strict=True))]


@settings(max_examples=400, deadline=None)
@given(rows=st.lists(st.tuples(urls_st, captions_st), min_size=1, max_size=30),
       max_url_length=st.sampled_from([16, 20, 2048]), first=st.integers(0, 10**6))
def test_column_cleaning_equals_the_per_record_rule(rows, max_url_length: int, first: int) -> None:
    """clean_columns (vectorized for plain ASCII rows, ``judge`` for the rest) gives every row the answer
    ``judge`` gives it: the same Candidate (url, caption, raw caption, record) or the same Rejection."""
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
    path = tmp_path / "cut.parquet"
    path.write_bytes(b"PAR1" + b"\x00" * 50)
    batches = list(read_pool_batches(str(path), open_read, PoolOptions()))
    assert [(r.reason, r.source_record) for b in batches for r in b.rejections] == \
        [(r.reason, r.source_record) for r in read(path)] == [("unreadable_file", 0)]
