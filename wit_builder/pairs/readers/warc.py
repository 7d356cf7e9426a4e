"""WARC-format pool files: WAT (Common Crawl's metadata records: the ``IMG@/src`` links of each HTML page) and
WARC (``response`` records with an HTML content type: every ``<img src alt>`` of the page). One record gives
the pairs of its page; each link is judged by :func:`wit_builder.pairs.readers.clean.judge` against the
page URL or its ``<base href>``.

WAT records are read with FastWARC (:mod:`wit_builder.pairs.readers.warc_records`); WARC records with warcio,
which decodes HTTP chunking and content encodings. One bad record never ends a file: a malformed record or
a cut gzip member is reported at its offset and reading resumes at the next gzip member that holds a WARC
record; a damaged record's links never count.

A WARC page's bytes become text as a browser's would (:func:`decode_html`, the HTML Standard's encoding
sniffing): a byte-order mark wins; then the ``charset`` of the HTTP ``Content-Type``; then a
``<meta charset>`` or ``<meta http-equiv=content-type>`` in the first 1024 bytes (lexbor's prescan, the
standard's algorithm); else UTF-8. Every label goes through the WHATWG Encoding Standard's label table
(``webencodings``), so ``euc-kr`` is decoded as windows-949, ``shift_jis`` as windows-31J, ``gb2312`` and ``gbk``
as gb18030, ``big5`` as Big5-HKSCS, ``iso-8859-1`` and ``ascii`` as windows-1252, not by Python's codecs of those
names (which turn the extension characters real pages use into U+FFFD). An alt text that still holds U+FFFD
(bytes the page's encoding does not define, or a page that does not say its legacy encoding) is not a pair:
it is counted as ``undecodable_caption`` with the encoding named.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
from collections.abc import Iterator
from email.message import Message
from typing import BinaryIO

import webencodings
from selectolax.lexbor import LexborHTMLParser
from selectolax.lexbor import _prescan_encoding_label as _lexbor_prescan  # type: ignore[attr-defined]
from warcio.archiveiterator import ArchiveIterator
from warcio.recordloader import ArcWarcRecord

from wit_builder.pairs.readers.clean import judge, urljoin
from wit_builder.pairs.readers.layouts import PoolOptions
from wit_builder.pairs.readers.records import Candidate, Rejection
from wit_builder.pairs.readers.warc_records import (
    Damage,
    Record,
    describe,
    iter_records,
    next_gzip_record,
    record_extent,
)

_WARC_TYPES = frozenset(
    ("warcinfo", "response", "resource", "request", "metadata", "revisit", "conversion", "continuation")
)


# ---- WAT ----

def read_wat(path: str, fh: BinaryIO, options: PoolOptions) -> Iterator[Candidate | Rejection]:
    """Image links of a WAT file's metadata records; damaged stretches are reported (``iter_records``)."""
    for item in iter_records(fh, _WAT_BODIES):
        if isinstance(item, Damage):
            yield Rejection(item.reason, path, item.offset, item.detail)
        else:
            yield from _wat_record(path, item, options)


_WAT_BODIES = frozenset(("metadata",))  # the record types whose block a WAT reader needs
_IMG_PATH = "IMG@/src"  # a WAT link's path for <img src>


def _wat_record(path: str, record: Record, options: PoolOptions) -> Iterator[Candidate | Rejection]:
    """A WAT metadata record: the ``IMG@/src`` links of its page's HTML metadata (``url`` and ``alt``)."""
    offset = record.offset
    if record.warc_type not in _WARC_TYPES:
        yield Rejection("malformed_record", path, offset, f"WARC-Type {record.warc_type!r}")
        return
    if record.body is None:
        return  # warcinfo and the like: a WAT keeps its pages in metadata records
    try:
        doc = json.loads(record.body)
    except UnicodeDecodeError as e:
        yield Rejection("non_utf8", path, offset, str(e)[:300])
        return
    except ValueError as e:
        yield Rejection("malformed_json", path, offset, str(e)[:300])
        return
    try:
        envelope = doc["Envelope"]
        page_url = envelope.get("WARC-Header-Metadata", {}).get("WARC-Target-URI") or record.target_uri
        html_meta = envelope.get("Payload-Metadata", {}).get("HTTP-Response-Metadata", {}).get("HTML-Metadata")
        if not html_meta:
            return  # request, warcinfo or non-HTML response: no images
        base = page_url
        declared_base = html_meta.get("Head", {}).get("Base")
        if declared_base and isinstance(declared_base, str):
            base = urljoin(page_url or "", declared_base.strip())  # <base href> may itself be relative
        links = [link for link in html_meta.get("Links", []) if link.get("path") == _IMG_PATH]
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        yield Rejection("malformed_json", path, offset, f"unexpected WAT layout: {type(e).__name__}: {e}"[:300])
        return
    for link in links:
        # WAT links keep attribute text as written in the page: src and alt alike hold entities (&amp;).
        url, alt = link.get("url"), link.get("alt")
        if isinstance(url, str) and "&" in url:
            url = unescape_attribute(url)
        if isinstance(alt, str) and "&" in alt:
            alt = unescape_attribute(alt)
        if isinstance(alt, str) and UNDECODABLE in alt:  # Common Crawl's decoder met bytes it could not read
            yield Rejection("undecodable_caption", path, offset, "alt text holds U+FFFD in the WAT")
            continue
        yield judge(url, alt, base, options, path, offset, page_url)


def unescape_attribute(text: str) -> str:
    """HTML attribute text with character references decoded (``html.unescape``); ``&amp;`` alone, the
    usual case in URLs, by one replace (the same result: a reference never starts inside "&amp;")."""
    if text.count("&") == text.count("&amp;"):
        return text.replace("&amp;", "&")
    return html.unescape(text)


# ---- WARC ----

def read_warc(path: str, fh: BinaryIO, options: PoolOptions) -> Iterator[Candidate | Rejection]:
    """The pairs of a WARC file's pages (warcio records, ``_warc_record``); damaged gzip members are reported and
    skipped."""
    start: int | None = 0
    while start is not None:
        fh.seek(start)
        records = ArchiveIterator(fh)
        damaged = False
        try:
            for record in records:
                offset = records.offset
                items = list(_warc_record(path, offset, record, options))
                # warcio reads a cut or corrupt gzip member quietly (it prints the zlib error and ends the block
                # early): check the record before its links count.
                damage = _warc_damage(fh, offset, record)
                if damage is None:
                    yield from items
                    continue
                reason, detail = damage
                if reason == "truncated_file":
                    yield Rejection(reason, path, offset, detail)
                    return
                start = next_gzip_record(fh, offset + 1)
                resumed = f"resumed at offset {start}" if start is not None else "no later record"
                yield Rejection(reason, path, offset, f"{detail}; {resumed}")
                damaged = True
                break
        except Exception as e:  # warcio/zlib raise many types for damaged input; the rest must go on
            # records.offset is the start of the record being parsed (warcio advances it between records).
            # An uncompressed WARC has no member boundaries to resume at: its rest is lost, reported here.
            start = next_gzip_record(fh, records.offset + 1)
            reason = "truncated_file" if isinstance(e, EOFError) else "malformed_record"
            resumed = f"resumed at offset {start}" if start is not None else "no later record"
            yield Rejection(reason, path, records.offset, f"{describe(e)}; {resumed}")
            continue
        if damaged:
            continue
        end = fh.seek(0, io.SEEK_END)
        if records.offset < end:  # a gzip member cut so early that warcio saw no record in it
            yield Rejection("truncated_file", path, records.offset, f"{end - records.offset} bytes hold no record")
        return


def _warc_damage(fh: BinaryIO, offset: int, record: ArcWarcRecord) -> tuple[str, str] | None:
    """Why warcio's ``record`` at ``offset`` is not whole (``truncated_file`` or ``malformed_record``, detail), or
    None. A block read in full whose gzip trailer alone is cut is whole (``iter_records``' rule for WAT)."""
    while record.raw_stream.read(1 << 16):  # the rest of the block, as warcio would read it next
        pass
    missing = record.raw_stream.limit
    here = fh.tell()  # warcio's read position: restored for the records after this one
    state = record_extent(fh, offset)[0]
    fh.seek(here)
    if state == "damaged":
        return "malformed_record", "corrupt gzip data in this record"
    if missing > 0:
        detail = f"record block short by {missing} bytes"
        return ("truncated_file", f"{detail}; the file ends inside this record") if state in ("cut", "unknown") \
            else ("malformed_record", detail)
    return None


_MAX_HTML_BYTES = 8 << 20  # a page body beyond this is cut: images of a page sit well within it
_HTML_TYPES = ("text/html", "application/xhtml+xml")
UNDECODABLE = "\ufffd"  # what a decoder puts where the bytes are not text in its encoding
# WHATWG Encoding Standard 10.1.1: "The gbk decoder is the gb18030 decoder" (webencodings keeps Python's gbk)
_GB18030 = webencodings.lookup("gb18030")


def _warc_record(path: str, offset: int, record: ArcWarcRecord,
                 options: PoolOptions) -> Iterator[Candidate | Rejection]:
    """A WARC response record: ``<img src alt>`` of an HTML page; other responses count as ``non_html``."""
    if record.rec_type not in _WARC_TYPES:
        yield Rejection("malformed_record", path, offset, f"WARC-Type {record.rec_type!r}")
        return
    if record.rec_type != "response":
        return  # warcinfo, request, metadata: no page
    page_url = record.rec_headers.get_header("WARC-Target-URI")
    http = record.http_headers
    content_type = (http.get_header("Content-Type") if http is not None else None) or ""
    mime = content_type.split(";", 1)[0].strip().lower()
    if http is None or mime not in _HTML_TYPES:
        yield Rejection("non_html", path, offset, mime or "no content type")
        return
    try:
        body = record.content_stream().read(_MAX_HTML_BYTES)
    except Exception as e:  # content-encoding or chunking damaged: the record is lost, the file goes on
        yield Rejection("malformed_record", path, offset, describe(e))
        return
    text, encoding = decode_html(body, content_type)
    tree = LexborHTMLParser(text)
    base = page_url
    base_node = tree.css_first("base[href]")
    if base_node is not None:
        declared = (base_node.attributes.get("href") or "").strip()
        if declared:
            with contextlib.suppress(ValueError):  # an unparseable <base> leaves the page URL as the base
                base = urljoin(page_url or "", declared)  # <base href> may itself be relative
    for node in tree.css("img"):
        attributes = node.attributes
        alt = attributes.get("alt")
        if alt is not None and UNDECODABLE in alt:
            yield Rejection("undecodable_caption", path, offset, f"alt text holds bytes that are not {encoding}")
            continue
        yield judge(attributes.get("src"), alt, base, options, path, offset, page_url)


def decode_html(body: bytes, content_type: str = "") -> tuple[str, str]:
    """(text, WHATWG name of the encoding used) of an HTML page's bytes, per the HTML Standard's encoding
    sniffing (module docstring): BOM, then the ``charset`` of ``content_type`` (the HTTP header), then a
    ``<meta>`` declaration in the first 1024 bytes, else UTF-8; unknown labels are skipped. Bytes the encoding does
    not define become U+FFFD."""
    encoding = _label_encoding(_header_charset(content_type))
    if encoding is None:
        declared = _lexbor_prescan(body[:1024])
        encoding = _label_encoding(declared.decode("ascii", "replace") if declared else None)
    if encoding is not None and encoding.name == "gbk":
        encoding = _GB18030
    text, used = webencodings.decode(body, encoding or webencodings.UTF8, errors="replace")
    return text, used.name


def _header_charset(content_type: str) -> str | None:
    """The ``charset`` parameter of a Content-Type header value (quotes and case as RFC 9110 allows), or None."""
    if "charset" not in content_type.lower():
        return None
    message = Message()
    message["content-type"] = content_type
    charset = message.get_param("charset")
    return charset if isinstance(charset, str) else None


def _label_encoding(label: str | None) -> webencodings.Encoding | None:
    """The WHATWG encoding of ``label`` (ASCII case-insensitive, whitespace trimmed), or None when unknown."""
    return webencodings.lookup(label) if label else None

