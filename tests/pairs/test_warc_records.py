"""WAT and WARC record reading: the fast urljoin, FastWARC record iteration and damaged gzip members."""

from __future__ import annotations

import gzip
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.build_pairs_fixtures import WatBuilder, img
from wit_builder.beam.fileio import open_read
from wit_builder.pairs.pool_readers import Candidate, PoolOptions, Rejection, check_pool_file, read_pool_file
from wit_builder.pairs.warc_records import urljoin

# ---- urljoin: the same string as urllib's for every input ----

# Pieces that exercise every branch: dot segments, empty segments, params, fragments, schemes, netlocs,
# whitespace and control characters urllib strips, non-ASCII, IPv6 brackets, and ordinary path text.
_PIECES = st.sampled_from([
    "", "/", "//", "///", ".", "..", "./", "../", "/.", "/..", "a", "b.jpg", "img", ".hidden", "..x", "?", "??",
    "?q=1", "&amp;", "#", "#f", ";", ";p=1", ":", "http:", "https:", "HTTP:", "ftp:", "data:", "mailto:",
    "javascript:", "//cdn.example", "//CDN.Example:8080", "//u@h", "//[::1]", "//[bad", "@", "%20", "%", " ",
    "\t", "\n", "\x00", "\x7f", "\\", "é", "\u3000", "~", "+", "=", "[", "]", "'", '"', "<", ">", "{", "}", "|",
])
_REFS = st.lists(_PIECES, max_size=6).map("".join)
_BASES = st.builds(
    lambda scheme, netloc, path, query: f"{scheme}://{netloc}{path}{query}",
    st.sampled_from(["http", "https", "HTTPS", "ftp"]),
    st.sampled_from(["a.example", "A.Example", "a.example:8080", "u:p@a.example", "a_b.example", "[::1]", "é.example",
                     "a.example."]),
    st.lists(_PIECES, max_size=5).map("".join).map(lambda p: p if not p or p[0] in "/?#;" else "/" + p),
    st.sampled_from(["", "?", "?x=1", "?x=1&y=2", "?a/b", "#frag", "?x#f"]),
)


@settings(max_examples=1000, deadline=None)  # 60,000 examples ran once by hand: equal
@given(_BASES, _REFS)
@example("https://site.example/page/1.html", "/img/0/1.jpg?w=1&h=2")
@example("https://site.example/a/b/c.html", "../../../../x.jpg")
@example("https://site.example/a//b/c.html", "d.jpg")
@example("https://site.example/a/./b/", "c/./d/../e.jpg")
@example("https://site.example", "x.jpg")
@example("https://site.example?q=1", "?")
@example("https://site.example/p?q=1", "")
@example("http://site.example/a;p/b", "c")
@example("https://site.example/", "//cdn.example/x.png?w=1")
@example("https://site.example/", "//ho[st/x")
def test_urljoin_equals_urllib(base: str, ref: str) -> None:
    try:
        expected: object = urllib.parse.urljoin(base, ref)
    except ValueError as e:
        expected = type(e)
    try:
        got: object = urljoin(base, ref)
    except ValueError as e:
        got = type(e)
    assert got == expected


@pytest.mark.parametrize("base, ref, joined", [
    ("https://shop.example/a/page.html", "../img/red-dog.jpg", "https://shop.example/img/red-dog.jpg"),
    ("https://shop.example/a/page.html", "//cdn.example/x.png", "https://cdn.example/x.png"),
    ("https://shop.example/a/page.html", "pic.jpg?w=1&h=2", "https://shop.example/a/pic.jpg?w=1&h=2"),
    ("http://blog.example/2020/post/", "/static/pic.jpg", "http://blog.example/static/pic.jpg"),
    ("http://blog.example/2020/post/?page=2", "?page=3", "http://blog.example/2020/post/?page=3"),
])
def test_urljoin_common_image_references(base: str, ref: str, joined: str) -> None:
    assert urljoin(base, ref) == joined


# ---- WAT records through FastWARC: damaged input ----

DATA = Path(__file__).parents[1] / "data"


def read(path: Path) -> list[Candidate | Rejection]:
    return list(read_pool_file(str(path), open_read, PoolOptions()))


def captions(items) -> list[str]:
    return [c.caption for c in items if isinstance(c, Candidate)]


def reports(items) -> list[tuple[str, int]]:
    return [(r.reason, r.source_record) for r in items if isinstance(r, Rejection)]


def three_pages() -> WatBuilder:
    wat = WatBuilder()
    for i in range(3):
        wat.page(f"http://t.example/{i}", [img(f"{i}.jpg", f"image {i}")])
    return wat


def test_real_common_crawl_samples() -> None:
    # whirlwind.warc.wat.gz: a real WAT (warcinfo + the metadata of a request record): no page, no image.
    assert read(DATA / "whirlwind.warc.wat.gz") == []
    check_pool_file(str(DATA / "whirlwind.warc.wat.gz"), open_read, PoolOptions())
    # whirlwind.warc.gz: the real WARC of the same capture; its page has 13 <img>, 7 with alt text.
    items = read(DATA / "whirlwind.warc.gz")
    assert [(c.url, c.caption) for c in items if isinstance(c, Candidate)][:3] == [
        ("https://an.wikipedia.org/static/images/mobile/copyright/wikipedia-wordmark-an.svg", "Biquipedia"),
        ("https://an.wikipedia.org/static/images/mobile/copyright/wikipedia-tagline-an.svg", "A enciclopedia libre"),
        ("https://upload.wikimedia.org/wikipedia/commons/thumb/0/0a/Escudo_de_Escopete_%28Guadalajara%29.svg/"
         "70px-Escudo_de_Escopete_%28Guadalajara%29.svg.png", "Escudo d'armas"),  # protocol-relative src
    ]
    assert len(captions(items)) == 7 and reports(items) == [("empty_caption", 1023)] * 6


def test_file_gzipped_whole_reads_every_record(tmp_path: Path) -> None:
    # `gzip file.warc.wat`: one member for all records. warcio refused such files after the first record.
    path = tmp_path / "whole.warc.wat.gz"
    path.write_bytes(gzip.compress(gzip.decompress(three_pages().bytes())))
    items = read(path)
    assert captions(items) == ["image 0", "image 1", "image 2"] and reports(items) == []


def test_damaged_first_member_header_resumes_at_the_next(tmp_path: Path) -> None:
    wat = three_pages()
    data = bytearray(wat.bytes())
    data[0:3] = bytes(3)  # the gzip magic of the first member is gone
    path = tmp_path / "bad-start.warc.wat.gz"
    path.write_bytes(bytes(data))
    items = read(path)
    assert captions(items) == ["image 1", "image 2"]
    assert reports(items) == [("malformed_record", 0)]
    assert items[0].detail.endswith(f"resumed at offset {wat.offsets[1]}")


def test_uncompressed_wat_resumes_at_the_next_record_line(tmp_path: Path) -> None:
    plain = gzip.decompress(three_pages().bytes())
    second = plain.index(b"WARC/1.0\r\n", 1)
    garbage = b"this line is not a WARC record\r\n\r\n"
    path = tmp_path / "plain.warc.wat"
    path.write_bytes(plain[:second] + garbage + plain[second:])
    items = read(path)
    assert captions(items) == ["image 0", "image 1", "image 2"]  # nothing lost but the garbage itself
    assert reports(items) == [("malformed_record", second)]
    assert items[1].detail.endswith(f"resumed at offset {second + len(garbage)}")


def test_file_ending_inside_a_record_header_is_one_truncation(tmp_path: Path) -> None:
    plain = gzip.decompress(three_pages().bytes())
    third = plain.index(b"WARC/1.0\r\n", plain.index(b"WARC/1.0\r\n", 1) + 1)
    path = tmp_path / "cut.warc.wat"
    path.write_bytes(plain[: third + 60])  # inside the third record's WARC header
    items = read(path)
    # warcio read the partial header as a record: "malformed_record: WARC-Type None". It is a cut.
    assert captions(items) == ["image 0", "image 1"] and reports(items) == [("truncated_file", third)]
    assert items[-1].detail == "the file ends inside this record's header"


def test_cut_gzip_trailer_keeps_the_whole_record(tmp_path: Path) -> None:
    path = tmp_path / "trailer.warc.wat.gz"
    path.write_bytes(three_pages().bytes()[:-4])  # the last member's length field is cut; its data is whole
    items = read(path)
    assert captions(items) == ["image 0", "image 1", "image 2"] and reports(items) == []


def test_bad_checksum_loses_only_that_record(tmp_path: Path) -> None:
    wat = three_pages()
    data = bytearray(wat.bytes())
    data[wat.offsets[2] - 8] ^= 0xFF  # the CRC-32 of the second member: its content is not what was written
    path = tmp_path / "crc.warc.wat.gz"
    path.write_bytes(bytes(data))
    items = read(path)
    assert captions(items) == ["image 0", "image 2"]
    assert reports(items) == [("malformed_record", wat.offsets[1])]
    assert items[1].detail.endswith(f"resumed at offset {wat.offsets[2]}")


def test_unknown_warc_type_is_reported(tmp_path: Path) -> None:
    wat = WatBuilder()
    wat.page("http://t.example/0", [img("0.jpg", "image 0")])
    odd = wat.raw("http://t.example/odd", b'{"Envelope": {}}', rec_type="x-custom")
    wat.page("http://t.example/1", [img("1.jpg", "image 1")])
    items = read(wat.write(tmp_path / "odd.warc.wat.gz"))
    assert captions(items) == ["image 0", "image 1"] and reports(items) == [("malformed_record", odd)]
    assert items[1].detail == "WARC-Type 'x-custom'"


def test_every_cut_of_a_file_reports_at_most_once(tmp_path: Path) -> None:
    """A download stopped at any byte: the records whose gzip member is whole are read, the rest is one
    report at the first incomplete member (none when the cut falls on a member boundary)."""
    wat = three_pages()
    data = wat.bytes()
    ends = wat.offsets[1:] + [len(data)]
    path = tmp_path / "cut.warc.wat.gz"
    # Every byte of the second member (a cut anywhere in one member), every 13th byte elsewhere.
    for cut in sorted({*range(wat.offsets[1], wat.offsets[2] + 1), *range(0, len(data) + 1, 13), len(data)}):
        path.write_bytes(data[:cut])
        items = read(path)
        whole = sum(end <= cut for end in ends)
        got = captions(items)
        # A member cut only in its 8-byte trailer still holds its whole record.
        assert got[:whole] == [f"image {i}" for i in range(whole)], cut
        assert len(got) <= whole + 1, cut
        if cut in [0, *ends] or len(got) == whole + 1:
            assert reports(items) == [], cut
        else:
            assert reports(items) == [("truncated_file", wat.offsets[whole])], cut


def test_a_reader_closed_early_closes_cleanly(tmp_path: Path) -> None:
    path = three_pages().write(tmp_path / "p.warc.wat.gz")
    items = read_pool_file(str(path), open_read, PoolOptions())
    assert isinstance(next(items), Candidate)
    items.close()  # GeneratorExit inside the record loop is not taken for damaged input
