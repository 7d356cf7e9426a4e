"""WARC pool pages in the encodings the web labels them with (issue 23): decoded as browsers do (the HTML
Standard's sniffing, the WHATWG Encoding Standard's labels), with real Korean, Japanese and Chinese text (the UN's
Universal Declaration of Human Rights, tests/data/README.md); alt texts that still do not decode are counted."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest

from tests.pairs.conftest import WarcBuilder, WatBuilder, img
from tests.pairs.readers.conftest import captions, read, rejections
from wit_builder.pairs.readers.warc import decode_html

UDHR = json.loads((Path(__file__).parents[2] / "data" / "udhr_articles_1_3.json").read_text(encoding="utf-8"))
KO_ARTICLE_1 = UDHR["ko"]["articles"]["제 1 조"][0]
JA_ARTICLE_1 = UDHR["ja"]["articles"]["第１条"][0]
ZH_HANS_ARTICLE_1 = UDHR["zh-Hans"]["articles"]["第一条"][0]
ZH_HANT_ARTICLE_1 = UDHR["zh-Hant"]["articles"]["第一條"][0]
FR_ARTICLE_2 = UDHR["fr"]["articles"]["Article 2"][0]  # holds ’ (0x92 in windows-1252)
# Characters real pages under these labels carry beyond the narrow standards: 똠방각하 (a Korean title, the
# customary CP949 test word) is outside KS X 1001; ①, ㈱ are NEC row 13 of Windows-31J.
KO_CAPTION = f"똠방각하: {KO_ARTICLE_1}"
JA_CAPTION = f"① {JA_ARTICLE_1} ㈱"


def page(alt: str, charset_meta: str | None = None) -> str:
    meta = f"<meta charset='{charset_meta}'>" if charset_meta else ""
    return f"<!doctype html><html><head>{meta}<title>t</title></head><body><img src='/a.jpg' alt='{alt}'></body></html>"


# (caption, bytes' encoding, Content-Type header, <meta charset>): what the label says, what the server sent
CASES = {
    "euc-kr header, windows-949 bytes": (KO_CAPTION, "cp949", "text/html; charset=euc-kr", None),
    "ks_c_5601-1987 meta": (KO_CAPTION, "cp949", "text/html", "ks_c_5601-1987"),
    "shift_jis header, windows-31j bytes": (JA_CAPTION, "cp932", "text/html; charset=Shift_JIS", None),
    "x-sjis meta": (JA_CAPTION, "cp932", "text/html", "x-sjis"),
    "euc-jp meta": (JA_ARTICLE_1, "euc-jp", "text/html", "EUC-JP"),
    "gb2312 header, GBK bytes (traditional text)": (ZH_HANT_ARTICLE_1, "gbk", 'text/html; charset="GB2312"', None),
    "gb2312 meta, simplified": (ZH_HANS_ARTICLE_1, "gb2312", "text/html", "gb2312"),
    "gbk label, gb18030 four-byte character": (ZH_HANS_ARTICLE_1 + " 𠀀", "gb18030", "text/html;charset=gbk", None),
    "big5 header, HKSCS bytes": (ZH_HANT_ARTICLE_1.replace("痩", ""), "big5hkscs", "text/html; charset=big5", None),
    "iso-8859-1 header, windows-1252 bytes": (FR_ARTICLE_2, "cp1252", "text/html; charset=ISO-8859-1", None),
    "us-ascii meta, windows-1252 bytes": (FR_ARTICLE_2, "cp1252", "text/html", "us-ascii"),
    "latin1 meta, windows-1252 bytes": (FR_ARTICLE_2, "cp1252", "text/html", "latin1"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_pages_decode_as_browsers_decode_them(name, tmp_path: Path):
    caption, encoding, content_type, meta = CASES[name]
    body = page(caption, meta).encode(encoding)
    warc = WarcBuilder()
    warc.response("https://site.example/p.html", body, content_type=content_type)
    items = read(warc.write(tmp_path / "p.warc.gz"))
    assert captions(items) == [caption] and rejections(items) == []


def test_pythons_codecs_of_those_names_would_have_garbled_them():
    """The issue's bug, kept as a check that the cases above test something: Python's codec of the label's name
    cannot decode what real servers send under that label."""
    for name in ("euc-kr header, windows-949 bytes", "shift_jis header, windows-31j bytes",
                 "gb2312 header, GBK bytes (traditional text)"):
        caption, encoding, content_type, _ = CASES[name]
        label = content_type.split("=")[1].strip('"')
        assert "\ufffd" in caption.encode(encoding).decode(label, errors="replace"), name
    caption, encoding, _, _ = CASES["iso-8859-1 header, windows-1252 bytes"]
    assert caption.encode(encoding).decode("iso-8859-1") != caption  # ’ becomes the C1 control U+0092


def test_sniffing_order_bom_then_header_then_meta_then_utf8():
    ko = page(KO_ARTICLE_1, "euc-kr")
    # a BOM wins over a header and a meta that say otherwise
    assert decode_html(codecs.BOM_UTF16_LE + ko.encode("utf-16-le"), "text/html; charset=euc-kr")[1] == "utf-16le"
    assert decode_html(codecs.BOM_UTF8 + ko.encode(), "text/html; charset=shift_jis") == (ko, "utf-8")
    # the header wins over the meta
    assert decode_html(ko.encode("utf-8"), "text/html; charset=utf-8")[1] == "utf-8"
    # an unknown header label is skipped: the meta decides
    assert decode_html(ko.encode("cp949"), "text/html; charset=no-such-thing") == (ko, "euc-kr")
    # http-equiv form, within the first 1024 bytes
    equiv = ("<html><head><meta http-equiv='Content-Type' content='text/html; charset=shift_jis'></head>"
             f"<body><img alt='{JA_CAPTION}'></body></html>")
    assert decode_html(equiv.encode("cp932"))[0] == equiv
    # a meta after the first 1024 bytes is not read (the standard's prescan limit): UTF-8, so U+FFFD
    late = "<html><head><!--" + "x" * 1100 + "--><meta charset='euc-kr'></head>" + KO_ARTICLE_1
    text, used = decode_html(late.encode("cp949"))
    assert used == "utf-8" and "\ufffd" in text
    # a meta saying utf-16 on bytes that are not UTF-16 means UTF-8 (HTML Standard)
    assert decode_html(page(KO_ARTICLE_1, "utf-16").encode("utf-8"))[1] == "utf-8"


def test_alt_texts_that_still_do_not_decode_are_counted_with_the_encoding(tmp_path: Path):
    warc = WarcBuilder()
    good = warc.response("https://a.example/", page(KO_ARTICLE_1).encode("cp949"), "text/html; charset=euc-kr")
    # an undeclared legacy page: read as UTF-8, its Korean alt is undecodable, its ASCII alt is fine
    undeclared = warc.response("https://b.example/", (
        f"<html><body><img src='/k.jpg' alt='{KO_ARTICLE_1}'><img src='/e.jpg' alt='plain ascii'></body></html>"
    ).encode("cp949"), "text/html")
    # bytes the declared encoding does not define (0xFF is never valid in EUC-KR)
    broken = warc.response("https://c.example/", b"<img src='/x.jpg' alt='\xff\xfe\xff'>", "text/html; charset=euc-kr")
    items = read(warc.write(tmp_path / "u.warc.gz"))
    assert captions(items) == [KO_ARTICLE_1, "plain ascii"]
    assert rejections(items) == [("undecodable_caption", undeclared), ("undecodable_caption", broken)]
    details = [r.detail for r in items if hasattr(r, "detail")]
    assert details == ["alt text holds bytes that are not utf-8", "alt text holds bytes that are not euc-kr"]
    assert good not in [record for _, record in rejections(items)]


def test_wat_alt_texts_that_common_crawl_could_not_decode_are_counted(tmp_path: Path):
    wat = WatBuilder()
    at = wat.page("https://k.example/", [img("/a.jpg", KO_ARTICLE_1), img("/b.jpg", "\ufffd\ufffd 방각하"),
                                         img("/c.jpg", JA_CAPTION)])
    items = read(wat.write(tmp_path / "k.warc.wat.gz"))
    assert captions(items) == [KO_ARTICLE_1, JA_CAPTION]
    assert rejections(items) == [("undecodable_caption", at)]
