"""WAT and WARC pool files: links resolved and judged, bad records reported, the rest of the file read."""

from __future__ import annotations

import gzip
from pathlib import Path

from tests.pairs.conftest import WarcBuilder, WatBuilder, img
from tests.pairs.readers.conftest import candidates, captions, read, rejections
from wit_builder.beam.fileio import open_read
from wit_builder.pairs.readers.formats import check_pool_file
from wit_builder.pairs.readers.layouts import PoolOptions
from wit_builder.pairs.readers.records import Candidate, Rejection

DATA = Path(__file__).parents[2] / "data"










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


def test_wat_url_entities_decoded_like_alt(tmp_path: Path) -> None:
    wat = WatBuilder()
    wat.page("http://e.example/p", [img("/img?id=1&amp;size=large&#38;v=2", "A &amp; B"),
                                    img("/plain?a=1&b=2", "raw ampersand")])
    assert candidates(read(wat.write(tmp_path / "e.warc.wat.gz"))) == [
        ("http://e.example/img?id=1&size=large&v=2", "A & B"),
        ("http://e.example/plain?a=1&b=2", "raw ampersand"),
    ]


def test_unknown_warc_type_is_reported(tmp_path: Path) -> None:
    wat = WatBuilder()
    wat.page("http://t.example/0", [img("0.jpg", "image 0")])
    odd = wat.raw("http://t.example/odd", b'{"Envelope": {}}', rec_type="x-custom")
    wat.page("http://t.example/1", [img("1.jpg", "image 1")])
    items = read(wat.write(tmp_path / "odd.warc.wat.gz"))
    assert captions(items) == ["image 0", "image 1"] and rejections(items) == [("malformed_record", odd)]
    assert items[1].detail == "WARC-Type 'x-custom'"


# ---- WARC pages ----

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


# ---- real Common Crawl samples ----

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
    assert len(captions(items)) == 7 and rejections(items) == [("empty_caption", 1023)] * 6
