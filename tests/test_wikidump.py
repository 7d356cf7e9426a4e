"""Reading pages from MediaWiki dumps: plain, bz2, multistream ranges, and bad files."""

from __future__ import annotations

import bz2
from collections import Counter

import pytest

from tests.queries_fixtures import page_xml, write_dump, write_multistream
from wit_builder.wikidump import (
    DumpError,
    DumpRange,
    index_candidates,
    is_index_file,
    plan_ranges,
    read_pages,
)


def opener(path):
    return open(path, "rb")


def test_sample_pages_namespaces_and_redirects(enwiki_sample):
    pages = list(read_pages(DumpRange(str(enwiki_sample)), opener))
    assert len(pages) == 206
    kinds = Counter((p.ns, p.redirect is not None) for p in pages)
    assert kinds == {(0, False): 106, (0, True): 99, (4, True): 1}
    first = pages[0]
    assert (first.title, first.page_id, first.redirect) == ("AccessibleComputing", 10, "Computer accessibility")
    anarchism = pages[1]
    assert anarchism.title == "Anarchism" and anarchism.redirect is None and "anarchism" in anarchism.text.lower()
    assert all(p.problem is None for p in pages)


def test_plain_xml_and_bz2_agree(tmp_path):
    pages = [page_xml(1, "Alpha", "alpha text"), page_xml(2, "Beta", "", redirect="Alpha")]
    plain = list(read_pages(DumpRange(str(write_dump(tmp_path / "d.xml", pages))), opener))
    packed = list(read_pages(DumpRange(str(write_dump(tmp_path / "d.xml.bz2", pages))), opener))
    assert [(p.title, p.text, p.redirect) for p in plain] == [("Alpha", "alpha text", None), ("Beta", "", "Alpha")]
    assert [(p.title, p.text, p.redirect) for p in packed] == [(p.title, p.text, p.redirect) for p in plain]


def test_multistream_ranges_read_the_same_pages(tmp_path, enwiki_sample):
    xml = bz2.decompress(enwiki_sample.read_bytes()).decode()
    dump = tmp_path / "enwiki-test-pages-articles-multistream.xml.bz2"
    index = write_multistream(dump, xml, pages_per_stream=30)
    assert str(index) in index_candidates(str(dump)) and is_index_file(str(index))
    ranges = plan_ranges(str(dump), opener, str(index), target_bytes=1)
    assert len(ranges) == 7 and ranges[-1].end is None  # 206 pages / 30 per stream
    assert all(a.end == b.start for a, b in zip(ranges, ranges[1:], strict=False))
    by_range = [list(read_pages(r, opener)) for r in ranges]
    assert [len(p) for p in by_range] == [30] * 6 + [26]
    whole = list(read_pages(DumpRange(str(enwiki_sample)), opener))
    key = [(p.page_id, p.title, p.ns, p.redirect, p.text) for pages in by_range for p in pages]
    assert key == [(p.page_id, p.title, p.ns, p.redirect, p.text) for p in whole]
    assert by_range[2][0].offset == ranges[2].start  # pages carry the offset of their bz2 stream
    grouped = plan_ranges(str(dump), opener, str(index), target_bytes=10**9)
    assert len(grouped) == 1 and sum(1 for _ in read_pages(grouped[0], opener)) == 206


def test_malformed_xml_names_file_line_and_last_page(tmp_path):
    pages = [page_xml(7, "Good", "fine"), "  <page><title>Broken</title><ns>0</ns><id>8</id><revision>\n  </page>\n"]
    path = write_dump(tmp_path / "bad.xml", pages)
    with pytest.raises(DumpError) as err:
        list(read_pages(DumpRange(str(path)), opener))
    message = str(err.value)
    assert str(path) in message and "malformed XML at line" in message and "after page id 7" in message


def test_truncated_bz2_names_file_and_offset(tmp_path):
    whole = write_dump(tmp_path / "whole.xml.bz2", [page_xml(i, f"T{i}", "word " * 500) for i in range(1, 50)])
    data = whole.read_bytes()
    cut = tmp_path / "cut.xml.bz2"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DumpError, match=r"truncated bz2 stream starting at byte 0 .*ends at byte \d+") as err:
        list(read_pages(DumpRange(str(cut)), opener))
    assert str(cut) in str(err.value)


def test_corrupt_bz2_names_file(tmp_path):
    path = tmp_path / "junk.xml.bz2"
    path.write_bytes(b"BZh9" + b"\x00" * 200)
    with pytest.raises(DumpError, match="corrupt bz2 data in the stream starting at byte 0") as err:
        list(read_pages(DumpRange(str(path)), opener))
    assert str(path) in str(err.value)


def test_empty_files_are_empty_dumps(tmp_path):
    for name in ("empty.xml", "empty.xml.bz2"):
        (tmp_path / name).write_bytes(b"")
        assert list(read_pages(DumpRange(str(tmp_path / name)), opener)) == []
    no_pages = write_dump(tmp_path / "nopages.xml.bz2", [])
    assert list(read_pages(DumpRange(str(no_pages)), opener)) == []


def test_page_missing_fields_is_reported_not_fatal(tmp_path):
    pages = ["  <page><title>No id</title><ns>0</ns><revision><text>x</text></revision></page>\n",
             page_xml(5, "Fine", "ok")]
    got = list(read_pages(DumpRange(str(write_dump(tmp_path / "d.xml", pages))), opener))
    assert got[0].problem == "missing <id>" and got[1].problem is None and got[1].title == "Fine"


def test_bad_index_line_names_index(tmp_path):
    index = tmp_path / "x-multistream-index.txt"
    index.write_text("600:10:Title\nnot an index line\n")
    with pytest.raises(DumpError, match=r"line 2 is not 'offset:page_id:title'"):
        plan_ranges(str(tmp_path / "x-multistream.xml.bz2"), opener, str(index))


def test_index_names():
    assert index_candidates("a/enwiki-20240601-pages-articles-multistream.xml.bz2")[0] == (
        "a/enwiki-20240601-pages-articles-multistream-index.txt.bz2"
    )
    assert "e-pages-articles-multistream-index1.txt-p1p41242.bz2" in index_candidates(
        "e-pages-articles-multistream1.xml-p1p41242.bz2"
    )
    assert index_candidates("plain.xml") == []
    assert not is_index_file("enwiki-pages-articles.xml.bz2")
