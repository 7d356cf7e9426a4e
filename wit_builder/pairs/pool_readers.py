"""Streaming readers of the candidate pool: Common Crawl WAT and WARC files and url/caption tables.

Each reader walks one file and yields, for every input record, either a ``Candidate`` (a usable
absolute http(s) URL with a non-empty caption) or a ``Rejection`` with its reason, file and record
offset. Memory stays flat: nothing is read ahead beyond a parquet row batch or one WARC record.

Record offsets (``source_record``): for WAT and WARC files the byte offset of the WARC record in the file
as stored (what ``warcio`` and CDX indexes use); for parquet and csv/tsv the 0-based data row index (the
header is not a row); for jsonl the 0-based line number.

Tables: TSV is tab-separated with no quoting (the IANA ``text/tab-separated-values`` rule: a field holds no
tab or newline, and a ``"`` is an ordinary character), so every line after the header is one record. CSV
follows RFC 4180 (quoted fields may hold commas, quotes and newlines). A UTF-8 byte-order mark is skipped.
Headerless tables (CC3M, CC12M) name their columns by 0-based position. Presets (``LAYOUTS``) give the
layouts of well-known pools; a per-input layout (``PoolOptions.layouts``) lets one run mix them.

One bad record never ends a file: a malformed WARC record or a cut gzip member is reported and reading
resumes at the next gzip member that holds a WARC record; a bad table row is reported and skipped.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import fnmatch
import gzip
import html
import io
import json
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import BinaryIO, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from selectolax.lexbor import LexborHTMLParser
from warcio.archiveiterator import ArchiveIterator

from wit_builder.core.table_checks import TEXT_OR_BINARY, ColumnTypeError, check_columns, check_header
from wit_builder.core.uid import clean_caption, normalize_url
from wit_builder.pairs.warc_records import (
    Damage,
    Record,
    describe,
    iter_records,
    next_gzip_record,
    record_extent,
    urljoin,
)

FORMATS = ("wat", "warc", "parquet", "jsonl", "csv", "tsv")
TABLE_FORMATS = ("parquet", "jsonl", "csv", "tsv")

# Ordinary web content that is not a pair: counted only.
FILTER_REASONS = ("data_uri", "empty_caption", "missing_url", "non_http_url", "invalid_url", "non_html")
# Damaged or hostile input: counted and reported with file and offset.
BAD_REASONS = ("url_too_long", "non_utf8", "wrong_type", "malformed_record", "malformed_json", "truncated_file",
               "unreadable_file")

_IMG_PATH = "IMG@/src"
_WARC_TYPES = frozenset(
    ("warcinfo", "response", "resource", "request", "metadata", "revisit", "conversion", "continuation")
)

Opener = Callable[[str], contextlib.AbstractContextManager[BinaryIO]]  # path -> open binary file


@dataclass(frozen=True)
class Layout:
    """How to read one table: format (or auto), url and caption columns, and whether a header line names them.

    Without a header the columns are 0-based positions written as digits (``"0"``, ``"1"``).
    """

    fmt: str = "auto"
    url_col: str = "url"
    caption_col: str = "caption"
    header: bool = True

    def __post_init__(self) -> None:
        if self.fmt != "auto" and self.fmt not in FORMATS:
            raise ValueError(f"pool format must be auto or one of {', '.join(FORMATS)}, not {self.fmt!r}")
        if not self.url_col or not self.caption_col:
            raise ValueError("url and caption column names must not be empty")
        if self.url_col == self.caption_col:  # one column cannot be both (and parquet would read it once)
            raise ValueError(f"url and caption are the same column {self.url_col}")
        if not self.header:
            if self.fmt not in ("auto", "csv", "tsv"):
                raise ValueError(f"a headerless pool must be csv or tsv, not {self.fmt}")
            for flag, col in (("--url-col", self.url_col), ("--caption-col", self.caption_col)):
                if not col.isdigit():
                    raise ValueError(f"without a header {flag} is a 0-based column position, not {col!r}")


# Well-known pool layouts (--pool-preset, --pool-layout PATTERN=PRESET).
LAYOUTS: dict[str, Layout] = {
    # Conceptual Captions 3M (Train_GCC-training.tsv): caption<TAB>url, no header.
    "cc3m": Layout("tsv", url_col="1", caption_col="0", header=False),
    # Conceptual 12M (cc12m.tsv): url<TAB>caption, no header.
    "cc12m": Layout("tsv", url_col="0", caption_col="1", header=False),
    # LAION-400M/2B/5B metadata parquets: URL, TEXT.
    "laion": Layout("auto", url_col="URL", caption_col="TEXT"),
    # DataComp / COYO metadata: url, text.
    "datacomp": Layout("auto", url_col="url", caption_col="text"),
    "coyo": Layout("auto", url_col="url", caption_col="text"),
    # img2dataset output parquets (url, caption, key, status, ...).
    "img2dataset": Layout("auto", url_col="url", caption_col="caption"),
}


def parse_layout(spec: str) -> Layout:
    """A preset name, or ``key=value`` items joined by commas: ``format``, ``url``, ``caption``, ``header``.

    ``"laion"``; ``"format=tsv,header=no,url=1,caption=0"``; ``"url=URL,caption=TEXT"``. Raises ValueError.
    """
    spec = spec.strip()
    if spec in LAYOUTS:
        return LAYOUTS[spec]
    if "=" not in spec:
        raise ValueError(f"pool layout {spec!r} is neither a preset ({', '.join(LAYOUTS)}) nor key=value items")
    fields: dict[str, str] = {}
    header: bool | None = None
    for item in spec.split(","):
        key, _, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if key == "format":
            fields["fmt"] = value
        elif key in ("url", "caption"):
            fields[f"{key}_col"] = value
        elif key == "header":
            if value not in ("yes", "no", "true", "false"):
                raise ValueError(f"pool layout header={value!r}: say yes or no")
            header = value in ("yes", "true")
        elif key == "preset":
            if value not in LAYOUTS:
                raise ValueError(f"unknown pool preset {value!r} (presets: {', '.join(LAYOUTS)})")
            preset = LAYOUTS[value]
            fields.update(fmt=preset.fmt, url_col=preset.url_col, caption_col=preset.caption_col)
            header = preset.header
        else:
            raise ValueError(f"pool layout key {key!r} is not one of format, url, caption, header, preset")
    return Layout(fmt=fields.get("fmt", Layout.fmt), url_col=fields.get("url_col", Layout.url_col),
                  caption_col=fields.get("caption_col", Layout.caption_col),
                  header=Layout.header if header is None else header)


@dataclass(frozen=True)
class PoolOptions:
    fmt: str = "auto"
    url_col: str = "url"
    caption_col: str = "caption"
    max_url_length: int = 2048  # longer URLs are almost always tracking junk; browsers cap around here
    header: bool = True
    # Per-input layouts: (glob pattern, Layout); a file takes the first whose pattern matches its path or
    # its base name, else the layout of the fields above.
    layouts: tuple[tuple[str, Layout], ...] = ()

    def __post_init__(self) -> None:
        Layout(self.fmt, self.url_col, self.caption_col, self.header)  # validates the default layout
        if self.max_url_length < 16:
            raise ValueError(f"max_url_length must be at least 16, not {self.max_url_length}")
        for pattern, layout in self.layouts:
            if not pattern or not isinstance(layout, Layout):
                raise ValueError(f"pool layout for {pattern!r} is not a (pattern, Layout) pair")

    def layout_for(self, path: str) -> Layout:
        base = path.rsplit("/", 1)[-1]
        for pattern, layout in self.layouts:
            if fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(base, pattern) or path == pattern:
                return layout
        return Layout(self.fmt, self.url_col, self.caption_col, self.header)

    def for_file(self, path: str) -> PoolOptions:
        """These options with the file's own layout applied (no per-input layouts left)."""
        layout = self.layout_for(path)
        return replace(self, fmt=layout.fmt, url_col=layout.url_col, caption_col=layout.caption_col,
                       header=layout.header, layouts=())


@dataclass(frozen=True)
class Candidate:
    url: str  # absolute, normalized (wit_builder.core.uid.normalize_url)
    caption: str  # cleaned (wit_builder.core.uid.clean_caption), non-empty
    source_file: str
    source_record: int
    page_url: str | None = None
    # The caption as read (HTML-unescaped, not cleaned): the text ``--match-rule metaclip`` matches, since
    # MetaCLIP's rule sees a pool's text as written (cleaning would fold "Martín  Berasategui" into a match).
    raw_caption: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Rejection:
    reason: str  # one of FILTER_REASONS or BAD_REASONS
    source_file: str
    source_record: int
    detail: str = ""

    @property
    def is_bad(self) -> bool:
        return self.reason in BAD_REASONS


class PoolFormatError(ColumnTypeError):
    """A pool file that cannot be read at all as configured (unknown or wrong format, missing column)."""


def detect_format(path: str, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    name = path.lower()
    if name.endswith((".wat.gz", ".wat")):
        return "wat"
    if name.endswith((".warc.gz", ".warc")):
        return "warc"
    if name.endswith((".wet.gz", ".wet")):
        raise PoolFormatError(f"{path}: a WET file holds page text only, no images; give the WAT or WARC file")
    name = name.removesuffix(".gz")  # tables may be gzipped; the readers detect it by magic bytes
    for ext, found in ((".parquet", "parquet"), (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl"),
                       (".csv", "csv"), (".tsv", "tsv")):
        if name.endswith(ext):
            return found
    raise PoolFormatError(f"{path}: cannot tell the pool format from the name; pass --pool-format")


# An absolute http(s) URL that normalize_url leaves as it is (but for a "/" after a bare host): lower-case
# scheme and host of plain labels, no userinfo, port or fragment, and none of the characters urllib strips
# or splits on (whitespace, control characters, backslash, "#").
_PLAIN_URL = re.compile(r"(https?://[a-z0-9_-]+(?:\.[a-z0-9_-]+)*)([/?][^#\\\x00-\x20\x7f]*)?\Z")


def clean_pair(
    raw_url: object, raw_caption: object, base: str | None, max_url_length: int
) -> tuple[str, str] | str:
    """(url, caption) ready to match, or the reason (a FILTER_/BAD_REASONS entry) the pair is unusable."""
    if not isinstance(raw_caption, str) or not raw_caption.strip():
        return "empty_caption"
    if not isinstance(raw_url, str) or not raw_url.strip():
        return "missing_url"
    url = raw_url.strip()
    if len(url) > max_url_length:
        return "url_too_long"
    if url[:5].lower() == "data:":
        return "data_uri"
    plain = _PLAIN_URL.match(url)
    if base and plain is None:  # an absolute plain URL resolves to itself: no urljoin
        try:
            url = urljoin(base, url)
        except ValueError:
            return "invalid_url"
        plain = _PLAIN_URL.match(url)
    if plain is not None:
        # Already in normalize_url's form (lower-case scheme and host, no port, userinfo or fragment): skip
        # urllib's split and join, the costliest step of a record. Only "/" may be missing after the host.
        rest = plain.group(2)
        if rest is None:
            url += "/"
        elif rest[0] == "?":
            url = plain.group(1) + "/" + rest
    else:
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme not in ("http", "https"):
            return "non_http_url"
        try:
            url = normalize_url(url)
        except ValueError:
            return "invalid_url"
    if len(url) > max_url_length:
        return "url_too_long"
    caption = clean_caption(raw_caption)
    return (url, caption) if caption else "empty_caption"


def _judge(raw_url: object, raw_caption: object, base: str | None, options: PoolOptions, path: str, record: int,
           page_url: str | None = None) -> Candidate | Rejection:
    cleaned = clean_pair(raw_url, raw_caption, base, options.max_url_length)
    if isinstance(cleaned, str):
        detail = f"{len(raw_url)} chars" if cleaned == "url_too_long" and isinstance(raw_url, str) else ""
        return Rejection(cleaned, path, record, detail)
    return Candidate(cleaned[0], cleaned[1], path, record, page_url, str(raw_caption))


def read_pool_file(path: str, opener: Opener, options: PoolOptions) -> Iterator[Candidate | Rejection]:
    """Every record of one pool file as a Candidate or a Rejection. Never raises for bad content.

    Raises PoolFormatError when the file cannot be read as configured at all (``check_pool_file`` finds
    that before any work).
    """
    options = options.for_file(path)
    fmt = detect_format(path, options.fmt)
    try:
        with opener(path) as fh:
            if fmt == "wat":
                yield from _read_wat(path, fh, options)
            elif fmt == "warc":
                yield from _read_warc(path, fh, options, _warc_record)
            elif fmt == "parquet":
                yield from _read_parquet(path, fh, options)
            elif fmt == "jsonl":
                yield from _read_jsonl(path, _maybe_gunzip(fh), options)
            elif fmt == "tsv":
                yield from _read_tsv(path, _maybe_gunzip(fh), options)
            else:
                yield from _read_csv(path, _maybe_gunzip(fh), options)
    except OSError as e:  # cannot open, or the filesystem failed mid-read
        yield Rejection("unreadable_file", path, -1, f"{type(e).__name__}: {e}")


# ---- WAT and WARC ----

def _read_warc(path: str, fh: BinaryIO, options: PoolOptions, handle) -> Iterator[Candidate | Rejection]:
    """Records of a WARC file (warcio) through ``handle``; damaged gzip members are reported and skipped."""
    start: int | None = 0
    while start is not None:
        fh.seek(start)
        records = ArchiveIterator(fh)
        damaged = False
        try:
            for record in records:
                offset = records.offset
                items = list(handle(path, offset, record, options))
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
            # An uncompressed WAT has no member boundaries to resume at: its rest is lost, reported here.
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


def _warc_damage(fh: BinaryIO, offset: int, record) -> tuple[str, str] | None:
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


def _read_wat(path: str, fh: BinaryIO, options: PoolOptions) -> Iterator[Candidate | Rejection]:
    """Image links of a WAT file's metadata records; damaged stretches are reported (``iter_records``)."""
    for item in iter_records(fh, _WAT_BODIES):
        if isinstance(item, Damage):
            yield Rejection(item.reason, path, item.offset, item.detail)
        else:
            yield from _wat_record(path, item, options)


_WAT_BODIES = frozenset(("metadata",))


def _wat_record(path: str, record: Record, options: PoolOptions) -> Iterator[Candidate | Rejection]:
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
        yield _judge(url, alt, base, options, path, offset, page_url)


def unescape_attribute(text: str) -> str:
    """HTML attribute text with character references decoded (``html.unescape``); ``&amp;`` alone, the
    usual case in URLs, by one replace (the same result: a reference never starts inside "&amp;")."""
    if text.count("&") == text.count("&amp;"):
        return text.replace("&amp;", "&")
    return html.unescape(text)


_MAX_HTML_BYTES = 8 << 20  # a page body beyond this is cut: images of a page sit well within it
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]{1,40})""", re.IGNORECASE)
_HTML_TYPES = ("text/html", "application/xhtml+xml")


def _warc_record(path: str, offset: int, record, options: PoolOptions) -> Iterator[Candidate | Rejection]:
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
    text = _decode_html(body, content_type)
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
        yield _judge(attributes.get("src"), attributes.get("alt"), base, options, path, offset, page_url)


def _decode_html(body: bytes, content_type: str) -> str:
    """Page text: the charset of the HTTP header, else of a ``<meta>`` in the first 2 KB, else UTF-8."""
    charset = None
    if "charset=" in content_type.lower():
        charset = content_type.lower().split("charset=", 1)[1].split(";")[0].strip(" \"'")
    if not charset and (found := _META_CHARSET.search(body[:2048])):
        charset = found.group(1).decode("ascii").lower()
    if body.startswith(codecs.BOM_UTF8):
        charset, body = "utf-8", body[len(codecs.BOM_UTF8):]
    try:
        codec = codecs.lookup(charset or "utf-8").name
    except LookupError:
        codec = "utf-8"
    if codec in ("latin-1", "iso8859-1", "ascii"):
        codec = "cp1252"  # WHATWG: these labels mean windows-1252
    return body.decode(codec, errors="replace")


# ---- tables ----

def _maybe_gunzip(fh: BinaryIO) -> BinaryIO:
    """``fh`` itself, or a gzip reader over it when it starts with the gzip magic bytes."""
    head = fh.read(2)
    fh.seek(0)
    return cast(BinaryIO, gzip.GzipFile(fileobj=fh, mode="rb")) if head == b"\x1f\x8b" else fh


def _read_parquet(path: str, fh: BinaryIO, options: PoolOptions) -> Iterator[Candidate | Rejection]:
    row = 0
    try:
        parquet = pq.ParquetFile(fh)
        _check_schema(path, parquet.schema_arrow, options)
        for batch in parquet.iter_batches(batch_size=8192, columns=[options.url_col, options.caption_col]):
            urls = _column_as_text(batch.column(0))
            captions = _column_as_text(batch.column(1))
            for url, caption in zip(urls, captions, strict=True):
                if isinstance(url, bytes) or isinstance(caption, bytes):
                    yield Rejection("non_utf8", path, row, "binary column value is not UTF-8")
                else:
                    yield _judge(url, caption, None, options, path, row)
                row += 1
    except PoolFormatError:
        raise
    except (pa.ArrowException, OSError, ValueError) as e:
        yield Rejection("unreadable_file" if row == 0 else "truncated_file", path, row, f"{type(e).__name__}: {e}")


def _column_as_text(column: pa.Array) -> list[object]:
    """Python values of a url/caption column; binary values decode as UTF-8 or stay bytes (reported)."""
    if pa.types.is_dictionary(column.type):  # a dictionary of binary values decodes like the plain column
        column = column.dictionary_decode()
    values = column.to_pylist()
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type) or pa.types.is_binary_view(column.type):
        out: list[object] = []
        for value in values:
            try:
                out.append(value.decode("utf-8") if value is not None else None)
            except UnicodeDecodeError:
                out.append(value)
        return out
    return values


def _read_jsonl(path: str, fh: BinaryIO, options: PoolOptions) -> Iterator[Candidate | Rejection]:
    line_no = 0
    try:
        for line_no, line in enumerate(fh):
            if line_no == 0 and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8):]
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Rejection("non_utf8", path, line_no, str(e)[:300])
                continue
            try:
                doc = json.loads(text)
            except ValueError as e:
                yield Rejection("malformed_json", path, line_no, str(e)[:300])
                continue
            if not isinstance(doc, dict):
                yield Rejection("malformed_json", path, line_no, f"a line holds a {type(doc).__name__}, not an object")
                continue
            url, caption = doc.get(options.url_col), doc.get(options.caption_col)
            if (wrong := _wrong_type(url, caption, options)) is not None:
                yield Rejection("wrong_type", path, line_no, wrong)
                continue
            yield _judge(url, caption, None, options, path, line_no)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        yield Rejection("truncated_file", path, line_no + 1, f"{type(e).__name__}: {e}")


def _wrong_type(url: object, caption: object, options: PoolOptions) -> str | None:
    """Why a jsonl record's url/caption cannot be text (a number, a list, an object), or None."""
    for column, value in ((options.url_col, url), (options.caption_col, caption)):
        if value is not None and not isinstance(value, str):
            return f"column {column!r} holds a {type(value).__name__}, not a string"
    return None


def _column_indices(path: str, header: list[str] | None, options: PoolOptions) -> tuple[int, int]:
    if not options.header:
        return int(options.url_col), int(options.caption_col)
    try:
        url_index, caption_index = check_header(
            path, header or [], ((options.url_col, "--url-col"), (options.caption_col, "--caption-col"))
        )
    except PoolFormatError:
        raise
    except ColumnTypeError as e:
        raise PoolFormatError(str(e)) from e
    return url_index, caption_index


def _read_tsv(path: str, fh: BinaryIO, options: PoolOptions) -> Iterator[Candidate | Rejection]:
    """One record per line, split on tabs, no quoting; bad lines are reported with their line numbers."""
    row_no = 0
    line_no = 0
    try:
        lines = iter(fh)
        header = None
        if options.header:
            first = next(lines, None)
            if first is None:
                return
            line_no = 1
            header = first.removeprefix(codecs.BOM_UTF8).rstrip(b"\r\n").decode("utf-8", "replace").split("\t")
        url_index, caption_index = _column_indices(path, header, options)
        needed = max(url_index, caption_index)
        for raw in lines:
            line_no += 1
            if line_no == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            fields = raw.rstrip(b"\r\n").split(b"\t")
            if len(fields) <= needed:
                yield Rejection("malformed_record", path, row_no,
                                f"line {line_no}: {len(fields)} field(s), column {needed} needed")
            else:
                try:
                    url, caption = fields[url_index].decode("utf-8"), fields[caption_index].decode("utf-8")
                except UnicodeDecodeError:
                    yield Rejection("non_utf8", path, row_no, f"line {line_no}: undecodable bytes")
                else:
                    yield _judge(url, caption, None, options, path, row_no)
            row_no += 1
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        yield Rejection("truncated_file", path, row_no, f"line {line_no + 1}: {type(e).__name__}: {e}")


def _read_csv(path: str, fh: BinaryIO, options: PoolOptions) -> Iterator[Candidate | Rejection]:
    """RFC 4180 rows (quoted fields may span lines); bad rows are reported with the line they end on."""
    # surrogateescape keeps reading past undecodable bytes; rows holding them are reported below.
    text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="surrogateescape", newline="")
    rows = csv.reader(text)
    row_no = 0
    try:
        header = next(rows, None) if options.header else None
        if options.header and header is None:
            return
        url_index, caption_index = _column_indices(path, header, options)
        while True:
            try:
                fields = next(rows)
            except StopIteration:
                return
            except csv.Error as e:
                yield Rejection("malformed_record", path, row_no, f"line {rows.line_num}: {str(e)[:300]}")
                row_no += 1
                continue
            if len(fields) <= max(url_index, caption_index):
                yield Rejection("malformed_record", path, row_no,
                                f"line {rows.line_num}: {len(fields)} field(s), column "
                                f"{max(url_index, caption_index)} needed")
            elif not _is_utf8(fields[url_index]) or not _is_utf8(fields[caption_index]):
                yield Rejection("non_utf8", path, row_no, f"line {rows.line_num}: undecodable bytes")
            else:
                yield _judge(fields[url_index], fields[caption_index], None, options, path, row_no)
            row_no += 1
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        yield Rejection("truncated_file", path, row_no, f"{type(e).__name__}: {e}")


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---- tables in columns: the stage's reader ----

BATCH_ROWS = 65_536  # records per CandidateBatch

# The vectorized form of clean_pair's fast path, in RE2 (Arrow's regex engine): _PLAIN_URL, anchored.
_PLAIN_HOST_RE2 = r"https?://[a-z0-9_-]+(?:\.[a-z0-9_-]+)*"
_PLAIN_URL_RE2 = rf"^{_PLAIN_HOST_RE2}(?:[/?][^#\\\x00-\x20\x7f]*)?$"
_ADD_SLASH_RE2 = rf"^({_PLAIN_HOST_RE2})(\?|$)"  # a bare host, or a host and a query: "/" goes after the host
# Python's str.split() whitespace among ASCII characters: \t \n \v \f \r, \x1c-\x1f and the space.
_ASCII_SPACE_RUN_RE2 = "[\t-\r\x1c-\x1f ]+"


@dataclass(frozen=True)
class CandidateBatch:
    """The candidates of up to ``BATCH_ROWS`` records of one pool file, in columns, and those records' rejections.

    Row ``i`` is ``Candidate(urls[i], captions[i], source_file, records[i], page_urls[i], raw_captions[i])``;
    every record of the span is either a row or one of ``rejections`` (``read_pool_file``'s per-record answer).
    """

    source_file: str
    records: pa.Array  # int64, the candidates' source_record
    urls: pa.Array  # string, normalized
    captions: pa.Array  # string, cleaned, non-empty
    raw_captions: pa.Array  # string, as read
    page_urls: pa.Array  # string, null for tables
    rejections: tuple[Rejection, ...] = ()

    def __len__(self) -> int:
        return len(self.records)

    def candidates(self) -> Iterator[Candidate]:
        """The rows as Candidate objects (for tests and the per-record path)."""
        columns = (self.urls, self.captions, self.records, self.page_urls, self.raw_captions)
        for url, caption, record, page_url, raw in zip(*(c.to_pylist() for c in columns), strict=True):
            yield Candidate(url, caption, self.source_file, record, page_url, raw)

    @staticmethod
    def of(path: str, items: list[Candidate | Rejection]) -> CandidateBatch:
        """A batch of per-record answers (``read_pool_file``'s items)."""
        found = [c for c in items if isinstance(c, Candidate)]
        return CandidateBatch(
            path, pa.array([c.source_record for c in found], pa.int64()),
            pa.array([c.url for c in found], pa.string()), pa.array([c.caption for c in found], pa.string()),
            pa.array([c.caption if c.raw_caption is None else c.raw_caption for c in found], pa.string()),
            pa.array([c.page_url for c in found], pa.string()),
            tuple(r for r in items if isinstance(r, Rejection)))


def read_pool_batches(path: str, opener: Opener, options: PoolOptions,
                      rows: int = BATCH_ROWS) -> Iterator[CandidateBatch]:
    """``read_pool_file`` in columns: the same candidates and rejections, as batches of up to ``rows`` records.

    Parquet files are cleaned column-wise (``clean_columns``); other formats are read record by record and
    gathered into batches. Raises PoolFormatError as ``read_pool_file`` does.
    """
    options = options.for_file(path)
    if detect_format(path, options.fmt) == "parquet":
        try:
            with opener(path) as fh:
                yield from _parquet_batches(path, fh, options, rows)
        except OSError as e:
            yield CandidateBatch.of(path, [Rejection("unreadable_file", path, -1, f"{type(e).__name__}: {e}")])
        return
    items: list[Candidate | Rejection] = []
    for item in read_pool_file(path, opener, options):
        items.append(item)
        if len(items) >= rows:
            yield CandidateBatch.of(path, items)
            items = []
    if items:
        yield CandidateBatch.of(path, items)


def _parquet_batches(path: str, fh: BinaryIO, options: PoolOptions, rows: int) -> Iterator[CandidateBatch]:
    row = 0
    try:
        parquet = pq.ParquetFile(fh)
        _check_schema(path, parquet.schema_arrow, options)
        for batch in parquet.iter_batches(batch_size=rows, columns=[options.url_col, options.caption_col]):
            yield clean_columns(path, row, batch.column(0), batch.column(1), options.max_url_length)
            row += batch.num_rows
    except PoolFormatError:
        raise
    except (pa.ArrowException, OSError, ValueError) as e:
        reason = "unreadable_file" if row == 0 else "truncated_file"
        yield CandidateBatch.of(path, [Rejection(reason, path, row, f"{type(e).__name__}: {e}")])


def _as_string(column: pa.Array) -> pa.Array | None:
    """A text column as ``string``; None for binary columns (their values may not be UTF-8)."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_string(column.type):
        return column
    if pa.types.is_large_string(column.type) or pa.types.is_string_view(column.type):
        return column.cast(pa.string())
    return None


def clean_columns(path: str, first_record: int, raw_urls: pa.Array, raw_captions: pa.Array,
                  max_url_length: int) -> CandidateBatch:
    """``_judge`` over table columns (record numbers from ``first_record``), vectorized where that is exact.

    A row takes the column-wise path when its URL is ASCII in ``_PLAIN_URL``'s form and shorter than the
    limit and its caption is ASCII with a word: then ``clean_pair`` reduces to adding a missing "/" after the
    host and folding ASCII whitespace runs (Python's ``str.split`` set). Every other row (non-ASCII, a URL to
    normalize or resolve, a rejection) goes through ``_judge`` itself. The tests hold the two paths equal.
    """
    urls, captions = _as_string(raw_urls), _as_string(raw_captions)
    if urls is None or captions is None:  # binary columns: the per-record path decodes and reports them
        url_values, caption_values = _column_as_text(raw_urls), _column_as_text(raw_captions)
        items = [Rejection("non_utf8", path, first_record + i, "binary column value is not UTF-8")
                 if isinstance(u, bytes) or isinstance(c, bytes)
                 else _judge(u, c, None, PoolOptions(max_url_length=max_url_length), path, first_record + i)
                 for i, (u, c) in enumerate(zip(url_values, caption_values, strict=True))]
        return CandidateBatch.of(path, items)
    folded = pc.utf8_trim(pc.replace_substring_regex(captions, _ASCII_SPACE_RUN_RE2, " "), " ")
    fast = pc.and_(pc.and_(pc.string_is_ascii(urls), pc.string_is_ascii(captions)),
                   pc.and_(pc.match_substring_regex(urls, _PLAIN_URL_RE2),
                           pc.and_(pc.less(pc.binary_length(urls), max_url_length),
                                   pc.greater(pc.binary_length(folded), 0))))
    fast_rows = fast.fill_null(False).to_numpy(zero_copy_only=False)
    fast_index = np.flatnonzero(fast_rows)
    slow_index = np.flatnonzero(~fast_rows)
    parts = []
    if len(fast_index):
        fixed = pc.replace_substring_regex(urls.take(fast_index), _ADD_SLASH_RE2, r"\1/\2", max_replacements=1)
        parts.append((fast_index, fixed, folded.take(fast_index), captions.take(fast_index)))
    rejections: list[Rejection] = []
    if len(slow_index):
        options = PoolOptions(max_url_length=max_url_length)
        found: list[Candidate] = []
        for i, url, caption in zip(slow_index.tolist(), urls.take(slow_index).to_pylist(),
                                   captions.take(slow_index).to_pylist(), strict=True):
            judged = _judge(url, caption, None, options, path, first_record + i)
            if isinstance(judged, Candidate):
                found.append(judged)
            else:
                rejections.append(judged)
        if found:
            parts.append((np.array([c.source_record - first_record for c in found], np.int64),
                          pa.array([c.url for c in found], pa.string()),
                          pa.array([c.caption for c in found], pa.string()),
                          pa.array([c.raw_caption for c in found], pa.string())))
    if not parts:
        empty = pa.array([], pa.string())
        return CandidateBatch(path, pa.array([], pa.int64()), empty, empty, empty, empty, tuple(rejections))
    index = np.concatenate([p[0] for p in parts])
    order = pa.array(np.argsort(index, kind="stable"))  # record order, as read_pool_file yields them
    column = [pa.concat_arrays([p[k] for p in parts]).take(order) for k in (1, 2, 3)]
    return CandidateBatch(path, pa.array(index[order.to_numpy()] + first_record, pa.int64()), column[0], column[1],
                          column[2], pa.nulls(len(index), pa.string()), tuple(rejections))


# ---- checks run before any work ----

def _check_schema(path: str, schema: pa.Schema, options: PoolOptions) -> None:
    try:
        check_columns(path, schema, {options.url_col: TEXT_OR_BINARY, options.caption_col: TEXT_OR_BINARY},
                      hints={options.url_col: "--url-col", options.caption_col: "--caption-col"})
    except PoolFormatError:
        raise
    except ColumnTypeError as e:
        raise PoolFormatError(str(e)) from e


_WARC_TYPE_LINE = re.compile(rb"\r?\nWARC-Type:\s*([A-Za-z]+)")


def sniff_content(head: bytes) -> str:
    """What the first bytes (decompressed) of a file look like: warc, wat, wet, parquet, json or text."""
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"WARC/"):
        types = {m.group(1).decode().lower() for m in _WARC_TYPE_LINE.finditer(head)}
        if types & {"response", "request", "resource", "revisit"}:
            return "warc"
        if "conversion" in types:
            return "wet"
        return "wat"
    stripped = head.removeprefix(codecs.BOM_UTF8).lstrip()
    if stripped.startswith((b"{", b"[")):
        return "json"
    return "text"


_FITS = {"wat": ("wat",), "warc": ("warc",), "parquet": ("parquet",), "jsonl": ("json",),
         "csv": ("text", "json"), "tsv": ("text", "json")}
_NAMES = {"wat": "a WAT file", "warc": "a WARC file", "wet": "a WET file (page text only, no images)",
          "parquet": "a parquet file", "json": "JSON lines", "text": "a text table (csv/tsv)"}


def _head(fh: BinaryIO, size: int = 1 << 16) -> bytes:
    """The first ``size`` bytes of the file's content, through gzip members when it is gzipped."""
    raw = fh.read(size)
    fh.seek(0)
    if not raw.startswith(b"\x1f\x8b"):
        return raw
    out, data = b"", raw
    try:  # one member after another (WARC files are one member per record) until enough is seen
        while data and len(out) < size:
            d = zlib.decompressobj(wbits=31)
            out += d.decompress(data, size - len(out))
            data = d.unused_data if d.eof else b""
    except zlib.error:
        pass
    return out


def check_pool_file(path: str, opener: Opener, options: PoolOptions) -> None:
    """Raise PoolFormatError naming the file when it cannot be read as configured, before any work.

    Checks that the content fits the (given or detected) format, that a table has its url and caption
    columns once each, with text types (parquet: from the footer; jsonl: the first 1,000 objects; csv/tsv:
    the header line). Reads only the head of a file and a parquet footer.
    """
    options = options.for_file(path)
    fmt = detect_format(path, options.fmt)
    with opener(path) as fh:
        head = _head(fh)
        if not head:
            return  # an empty file: it reads as no records
        kind = sniff_content(head)
        if kind not in _FITS[fmt]:
            hint = {"wat": "wat", "warc": "warc", "parquet": "parquet", "json": "jsonl"}.get(kind)
            advice = f"; pass --pool-format {hint} (or name it by its extension)" if hint else ""
            if kind == "wet":
                advice = "; give the WAT or WARC file of the same crawl"
            raise PoolFormatError(f"{path}: read as {fmt} but its content is {_NAMES[kind]}{advice}")
        if fmt in ("wat", "warc"):
            return
        if fmt == "parquet":
            try:
                schema = pq.ParquetFile(fh).schema_arrow
            except (pa.ArrowException, OSError) as e:
                raise PoolFormatError(f"{path}: not a readable parquet file ({e})") from e
            _check_schema(path, schema, options)
            return
        stream = _maybe_gunzip(fh)
        if fmt == "jsonl":
            _check_jsonl_head(path, stream, options)
            return
        if not options.header:
            return
        if fmt == "tsv":
            first = stream.readline().removeprefix(codecs.BOM_UTF8).rstrip(b"\r\n")
            header = first.decode("utf-8", "replace").split("\t") if first else []
        else:
            header = next(csv.reader(io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")),
                          [])
        _column_indices(path, header, options)


def _check_jsonl_head(path: str, stream: BinaryIO, options: PoolOptions) -> None:
    found = False
    for line_no, line in enumerate(stream):
        if line_no >= 1000:
            break
        try:
            doc = json.loads(line.removeprefix(codecs.BOM_UTF8), object_pairs_hook=list)
        except ValueError:
            continue
        if not isinstance(doc, list) or (doc and not isinstance(doc[0], tuple)):
            continue
        keys = [k for k, _ in doc]
        for column in (options.url_col, options.caption_col):
            if keys.count(column) > 1:
                raise PoolFormatError(f"{path}: line {line_no + 1}: key {column!r} appears {keys.count(column)} "
                                      "times in one object; which one is meant is ambiguous")
        values = dict(doc)
        if not found:
            _column_indices(path, keys, options)  # the first object names the columns
            found = True
        for column in (options.url_col, options.caption_col):
            value = values.get(column)
            if value is not None and not isinstance(value, str):
                raise PoolFormatError(f"{path}: line {line_no + 1}: column {column!r} holds a "
                                      f"{type(value).__name__} ({json.dumps(value)[:60]}), expected a string")
    if not found:
        raise PoolFormatError(f"{path}: no JSON object in the first lines; is this a jsonl file?")


def check_table_columns(path: str, opener: Opener, options: PoolOptions) -> None:
    """Former name of ``check_pool_file``."""
    check_pool_file(path, opener, options)
