"""Reading pages from MediaWiki dumps: plain, bz2, multistream ranges, and bad files."""

from __future__ import annotations

import bz2
from collections import Counter

import pytest

from tests.queries.conftest import HEADER as HEADER_V10
from tests.queries.conftest import page_xml, write_dump, write_multistream
from wit_builder.queries.wikidump import (
    DumpError,
    DumpInput,
    DumpRange,
    dump_inputs,
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


@pytest.mark.parametrize(("name", "magic", "kind"), [
    ("d.xml.gz", b"\x1f\x8b\x08\x00", "gzip"),
    ("d.xml.7z", b"7z\xbc\xaf\x27\x1c", "7z"),
    ("d.xml.xz", b"\xfd7zXZ\x00", "xz"),
    ("d.xml.zst", b"\x28\xb5\x2f\xfd", "zstd"),
    ("d.xml", b"BZh91AY&SY", "bz2"),  # a .bz2 dump renamed without its suffix
])
def test_compressed_dump_of_another_format_says_so(tmp_path, name, magic, kind):
    path = tmp_path / name
    path.write_bytes(magic + b"\x00" * 64)
    with pytest.raises(DumpError) as err:
        list(read_pages(DumpRange(str(path)), opener))
    message = str(err.value)
    assert message.startswith(f"{path}: ") and f"{kind}-compressed" in message
    assert "malformed XML" not in message


def test_error_before_any_page_says_so_once(tmp_path):
    path = tmp_path / "notxml.xml"
    path.write_bytes(b"hello world, not xml\n")
    with pytest.raises(DumpError) as err:
        list(read_pages(DumpRange(str(path)), opener))
    assert str(err.value).count("no whole page was read") == 1


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


def test_dump_inputs_pair_each_dump_with_the_index_beside_it():
    found = {"a/x-multistream-index.txt.bz2", "a/y-multistream-index.txt"}
    paths = ["a/plain.xml", "a/x-multistream.xml.bz2", "a/x-multistream-index.txt.bz2", "a/y-multistream.xml.bz2"]
    assert dump_inputs(paths, found.__contains__) == [
        DumpInput("a/plain.xml", None), DumpInput("a/x-multistream.xml.bz2", "a/x-multistream-index.txt.bz2"),
        DumpInput("a/y-multistream.xml.bz2", "a/y-multistream-index.txt")]
    assert dump_inputs(["a/x-multistream-index.txt.bz2"], found.__contains__) == []  # an index alone is no dump


# ---- old and unusual dumps (issue 10) ----

# The head of enwik8 (Matt Mahoney's first 10^8 bytes of the English Wikipedia dump of 2006-03-03, export
# schema 0.3: no <ns>, <redirect> absent), as published; the namespace list is cut to the names used here.
ENWIK8_HEAD = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.3/" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.3/ http://www.mediawiki.org/xml/export-0.3.xsd" \
version="0.3" xml:lang="en">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <base>http://en.wikipedia.org/wiki/Main_Page</base>
    <generator>MediaWiki 1.6alpha</generator>
    <case>first-letter</case>
      <namespaces>
      <namespace key="-2">Media</namespace>
      <namespace key="-1">Special</namespace>
      <namespace key="0" />
      <namespace key="1">Talk</namespace>
      <namespace key="2">User</namespace>
      <namespace key="3">User talk</namespace>
      <namespace key="4">Wikipedia</namespace>
      <namespace key="10">Template</namespace>
      <namespace key="14">Category</namespace>
      <namespace key="100">Portal</namespace>
    </namespaces>
  </siteinfo>
  <page>
    <title>AaA</title>
    <id>1</id>
    <revision>
      <id>32899315</id>
      <timestamp>2005-12-27T18:46:47Z</timestamp>
      <contributor>
        <username>Jsmethers</username>
        <id>614213</id>
      </contributor>
      <text xml:space="preserve">#REDIRECT [[AAA]]</text>
    </revision>
  </page>
"""


def _old_page(page_id: int, title: str, text: str) -> str:
    return (f"  <page>\n    <title>{title}</title>\n    <id>{page_id}</id>\n    <revision>\n      <id>{page_id}0</id>\n"
            f"      <timestamp>2006-01-01T00:00:00Z</timestamp>\n"
            f'      <text xml:space="preserve">{text}</text>\n    </revision>\n  </page>\n')


def test_schema_0_3_namespace_from_title_prefix_and_siteinfo(tmp_path):
    pages = [_old_page(2, "Anarchism", "Anarchism is a philosophy."), _old_page(3, "Talk:Anarchism", "chat"),
             _old_page(4, "Portal:Arts", "portal"), _old_page(5, "Wikipedia:About", "about"),
             _old_page(6, "Star Wars: A New Hope", "film"), _old_page(7, "Template talk:X", "unknown name")]
    path = tmp_path / "enwik8-head.xml"
    path.write_text(ENWIK8_HEAD + "".join(pages) + "</mediawiki>\n", encoding="utf-8")
    got = {p.title: (p.ns, p.redirect, p.problem) for p in read_pages(DumpRange(str(path)), opener)}
    assert got["AaA"] == (0, "AAA", None)  # redirect known from its text
    assert got["Anarchism"] == (0, None, None)
    assert got["Talk:Anarchism"][0] == 1 and got["Portal:Arts"][0] == 100 and got["Wikipedia:About"][0] == 4
    assert got["Star Wars: A New Hope"][0] == 0  # a colon that names no namespace
    assert got["Template talk:X"][0] == 11  # not in this siteinfo: MediaWiki's canonical names


@pytest.mark.parametrize("version", ["0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "0.10", "0.11"])
def test_every_export_schema_reads(tmp_path, version):
    header = (f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-{version}/" version="{version}" '
              'xml:lang="en">\n  <siteinfo><sitename>Wikipedia</sitename></siteinfo>\n')
    with_ns = float(version.split(".")[1]) >= 6 or version.endswith(".10") or version.endswith(".11")
    pages = [page_xml(1, "Paris", "Paris is a city.") if with_ns else _old_page(1, "Paris", "Paris is a city."),
             page_xml(2, "User:Me", "me", ns=2) if with_ns else _old_page(2, "User:Me", "me")]
    path = write_dump(tmp_path / f"v{version}.xml.bz2", pages, header=header)
    got = [(p.title, p.ns, p.page_id, p.text, p.problem) for p in read_pages(DumpRange(str(path)), opener)]
    assert got == [("Paris", 0, 1, "Paris is a city.", None), ("User:Me", 2, 2, "me", None)]


def test_history_dump_yields_latest_revision_once(tmp_path):
    revisions = "".join(
        f"    <revision>\n      <id>{i}</id>\n      <timestamp>{ts}</timestamp>\n"
        f'      <text xml:space="preserve">{text}</text>\n    </revision>\n'
        for i, (ts, text) in enumerate([("2001-01-01T00:00:00Z", "first"), ("2009-05-05T00:00:00Z", "latest"),
                                        ("2004-01-01T00:00:00Z", "middle, listed out of order")])
    )
    page = f"  <page>\n    <title>Paris</title>\n    <ns>0</ns>\n    <id>9</id>\n{revisions}  </page>\n"
    path = write_dump(tmp_path / "history.xml", [page, page_xml(10, "Lyon", "only")])
    got = [(p.title, p.text) for p in read_pages(DumpRange(str(path)), opener)]
    assert got == [("Paris", "latest"), ("Lyon", "only")]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_dump(tmp_path, encoding):
    xml = ('<?xml version="1.0" encoding="UTF-16"?>\n' + HEADER_V10 + page_xml(1, "İstanbul", "Şehir ünlü. " * 200_000)
           + page_xml(2, "Zürich", "See") + "</mediawiki>\n")
    data = xml.encode(encoding)
    if encoding != "utf-16":  # the plain codec writes a BOM; the -le/-be ones do not, so add it
        data = ("\ufeff").encode(encoding) + data
    path = tmp_path / "utf16.xml"
    path.write_bytes(data)
    assert len(data) > 2 * (1 << 20)  # spans several read chunks
    got = [(p.title, len(p.text)) for p in read_pages(DumpRange(str(path)), opener)]
    assert got == [("İstanbul", len("Şehir ünlü. ") * 200_000), ("Zürich", 3)]


def test_truncated_small_bz2_names_the_last_whole_page(tmp_path):
    whole = write_dump(tmp_path / "whole.xml", [page_xml(i, f"T{i}", "word " * 50) for i in range(1, 6)])
    data = whole.read_bytes()
    assert len(data) < 1 << 20
    cut = data[: data.index(b"<title>T5</title>")]  # the file ends inside page 5
    (tmp_path / "cut.xml").write_bytes(cut)
    (tmp_path / "cut.xml.bz2").write_bytes(bz2.compress(cut))  # a whole bz2 stream of truncated XML
    for name in ("cut.xml", "cut.xml.bz2"):
        with pytest.raises(DumpError) as err:
            list(read_pages(DumpRange(str(tmp_path / name)), opener))
        assert "the last whole page read" in str(err.value) and "4 'T4'" in str(err.value), str(err.value)
    big = write_dump(tmp_path / "big.xml.bz2", [page_xml(i, f"T{i}", f"word{i} " * 40_000) for i in range(1, 9)])
    (tmp_path / "bigcut.xml.bz2").write_bytes(big.read_bytes()[: big.stat().st_size * 3 // 4])
    with pytest.raises(DumpError, match=r"truncated bz2 stream .*the last whole page read was id \d+ 'T\d+'"):
        list(read_pages(DumpRange(str(tmp_path / "bigcut.xml.bz2")), opener))
