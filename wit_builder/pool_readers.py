"""Streaming readers of the candidate pool: Common Crawl WAT files and url/caption tables.

Each reader walks one file and yields, for every input record, either a ``Candidate`` (a usable
absolute http(s) URL with a non-empty caption) or a ``Rejection`` with its reason, file and record
offset. Memory stays flat: nothing is read ahead beyond a parquet row batch or one WARC record.

Record offsets (``source_record``): for WAT files the byte offset of the WARC record in the file as
stored (what ``warcio`` and CDX indexes use); for parquet and csv/tsv the 0-based data row index (the
header is not a row); for jsonl the 0-based line number.

One bad record never ends a file: a malformed WARC record or a cut gzip member is reported and reading
resumes at the next gzip member that holds a WARC record; a bad table row is reported and skipped.
"""

from __future__ import annotations

import csv
import gzip
import html
import io
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urljoin

import pyarrow as pa
import pyarrow.parquet as pq
from warcio.archiveiterator import ArchiveIterator

from wit_builder.uid import clean_caption, normalize_url

FORMATS = ("wat", "parquet", "jsonl", "csv", "tsv")

# Ordinary web content that is not a pair: counted only.
FILTER_REASONS = ("data_uri", "empty_caption", "missing_url", "non_http_url", "invalid_url")
# Damaged or hostile input: counted and reported with file and offset.
BAD_REASONS = ("url_too_long", "non_utf8", "malformed_record", "malformed_json", "truncated_file", "unreadable_file")

_IMG_PATH = "IMG@/src"
_WARC_TYPES = frozenset(
    ("warcinfo", "response", "resource", "request", "metadata", "revisit", "conversion", "continuation")
)
_GZIP_MAGIC = b"\x1f\x8b\x08"
_RESYNC_CHUNK = 1 << 16

Opener = Callable[[str], BinaryIO]


@dataclass(frozen=True)
class PoolOptions:
    fmt: str = "auto"
    url_col: str = "url"
    caption_col: str = "caption"
    max_url_length: int = 2048  # longer URLs are almost always tracking junk; browsers cap around here

    def __post_init__(self) -> None:
        if self.fmt != "auto" and self.fmt not in FORMATS:
            raise ValueError(f"pool format must be auto or one of {', '.join(FORMATS)}, not {self.fmt!r}")
        if self.max_url_length < 16:
            raise ValueError(f"max_url_length must be at least 16, not {self.max_url_length}")
        if not self.url_col or not self.caption_col:
            raise ValueError("url and caption column names must not be empty")


@dataclass(frozen=True)
class Candidate:
    url: str  # absolute, normalized (wit_builder.uid.normalize_url)
    caption: str  # cleaned (wit_builder.uid.clean_caption), non-empty
    source_file: str
    source_record: int
    page_url: str | None = None


@dataclass(frozen=True)
class Rejection:
    reason: str  # one of FILTER_REASONS or BAD_REASONS
    source_file: str
    source_record: int
    detail: str = ""

    @property
    def is_bad(self) -> bool:
        return self.reason in BAD_REASONS


class PoolFormatError(ValueError):
    """A pool file that cannot be read at all as configured (unknown format, missing column)."""


def detect_format(path: str, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    name = path.lower()
    if name.endswith((".wat.gz", ".wat")):
        return "wat"
    name = name.removesuffix(".gz")  # tables may be gzipped; the readers detect it by magic bytes
    for ext, found in ((".parquet", "parquet"), (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl"),
                       (".csv", "csv"), (".tsv", "tsv")):
        if name.endswith(ext):
            return found
    raise PoolFormatError(f"{path}: cannot tell the pool format from the name; pass --pool-format")


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
    if base:
        try:
            url = urljoin(base, url)
        except ValueError:
            return "invalid_url"
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
    return Candidate(cleaned[0], cleaned[1], path, record, page_url)


def read_pool_file(path: str, opener: Opener, options: PoolOptions) -> Iterator[Candidate | Rejection]:
    """Every record of one pool file as a Candidate or a Rejection. Never raises for bad content."""
    fmt = detect_format(path, options.fmt)
    try:
        with opener(path) as fh:
            if fmt == "wat":
                yield from _read_wat(path, fh, options)
            elif fmt == "parquet":
                yield from _read_parquet(path, fh, options)
            elif fmt == "jsonl":
                yield from _read_jsonl(path, _maybe_gunzip(fh), options)
            else:
                yield from _read_delimited(path, _maybe_gunzip(fh), options, "\t" if fmt == "tsv" else ",")
    except OSError as e:  # cannot open, or the filesystem failed mid-read
        yield Rejection("unreadable_file", path, -1, f"{type(e).__name__}: {e}")


# ---- WAT ----

def _read_wat(path: str, fh: BinaryIO, options: PoolOptions) -> Iterator[Candidate | Rejection]:
    start = 0
    while start is not None:
        fh.seek(start)
        records = ArchiveIterator(fh)
        try:
            for record in records:
                yield from _wat_record(path, records.offset, record, options)
        except Exception as e:  # warcio/zlib raise many types for damaged input; the rest must go on
            # records.offset is the start of the record being parsed (warcio advances it between records).
            # An uncompressed WAT has no member boundaries to resume at: its rest is lost, reported here.
            start = _next_gzip_record(fh, records.offset + 1)
            reason = "truncated_file" if isinstance(e, EOFError) else "malformed_record"
            resumed = f"resumed at offset {start}" if start is not None else "no later record"
            yield Rejection(reason, path, records.offset, f"{_describe(e)}; {resumed}")
            continue
        end = fh.seek(0, io.SEEK_END)
        if records.offset < end:  # a gzip member cut so early that warcio saw no record in it
            yield Rejection("truncated_file", path, records.offset, f"{end - records.offset} bytes hold no record")
        return


def _describe(error: Exception) -> str:
    """Printable one-line error text (warcio quotes the damaged bytes)."""
    return f"{type(error).__name__}: {ascii(str(error).strip()[:200])[1:-1]}"


def _wat_record(path: str, offset: int, record, options: PoolOptions) -> Iterator[Candidate | Rejection]:
    if record.rec_type not in _WARC_TYPES:
        yield Rejection("malformed_record", path, offset, f"WARC-Type {record.rec_type!r}")
        return
    if record.rec_type != "metadata":
        return
    expected = record.length
    payload = record.content_stream().read()
    if expected is not None and len(payload) < expected:
        yield Rejection("truncated_file", path, offset, f"record has {len(payload)} of {expected} bytes")
        return
    try:
        doc = json.loads(payload)
    except UnicodeDecodeError as e:
        yield Rejection("non_utf8", path, offset, str(e)[:300])
        return
    except ValueError as e:
        yield Rejection("malformed_json", path, offset, str(e)[:300])
        return
    try:
        envelope = doc["Envelope"]
        page_url = envelope.get("WARC-Header-Metadata", {}).get("WARC-Target-URI") or record.rec_headers.get_header(
            "WARC-Target-URI"
        )
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
        alt = link.get("alt")
        if isinstance(alt, str) and "&" in alt:
            alt = html.unescape(alt)  # attribute text as written in the page
        yield _judge(link.get("url"), alt, base, options, path, offset, page_url)


def _next_gzip_record(fh: BinaryIO, position: int) -> int | None:
    """Offset of the next gzip member at or after ``position`` whose content starts a WARC record."""
    fh.seek(position)
    buffer = b""
    buffer_start = position
    while True:
        chunk = fh.read(_RESYNC_CHUNK)
        if not chunk:
            return None
        buffer += chunk
        index = buffer.find(_GZIP_MAGIC)
        while index >= 0:
            candidate = buffer_start + index
            if _starts_warc_member(fh, candidate):
                return candidate
            index = buffer.find(_GZIP_MAGIC, index + 1)
        keep = len(_GZIP_MAGIC) - 1  # a magic number may straddle two chunks
        buffer_start += len(buffer) - keep
        buffer = buffer[-keep:]
        fh.seek(buffer_start + len(buffer))


def _starts_warc_member(fh: BinaryIO, offset: int) -> bool:
    here = fh.tell()
    fh.seek(offset)
    try:
        head = zlib.decompressobj(wbits=31).decompress(fh.read(4096), 16)
    except zlib.error:
        head = b""
    fh.seek(here)
    return head.startswith(b"WARC/")


# ---- tables ----

def _maybe_gunzip(fh: BinaryIO) -> BinaryIO:
    head = fh.read(2)
    fh.seek(0)
    return gzip.GzipFile(fileobj=fh, mode="rb") if head == b"\x1f\x8b" else fh


def _read_parquet(path: str, fh: BinaryIO, options: PoolOptions) -> Iterator[Candidate | Rejection]:
    row = 0
    try:
        parquet = pq.ParquetFile(fh)
        _require_columns(path, parquet.schema_arrow.names, options)
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
    values = column.to_pylist()
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
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
            yield _judge(doc.get(options.url_col), doc.get(options.caption_col), None, options, path, line_no)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        yield Rejection("truncated_file", path, line_no + 1, f"{type(e).__name__}: {e}")


def _read_delimited(path: str, fh: BinaryIO, options: PoolOptions, delimiter: str) -> Iterator[Candidate | Rejection]:
    # surrogateescape keeps reading past undecodable bytes; rows holding them are reported below.
    text = io.TextIOWrapper(fh, encoding="utf-8", errors="surrogateescape", newline="")
    rows = csv.reader(text, delimiter=delimiter)
    row_no = 0
    try:
        header = next(rows, None)
        if header is None:
            return
        url_index, caption_index = _require_columns(path, header, options)
        while True:
            try:
                fields = next(rows)
            except StopIteration:
                return
            except csv.Error as e:
                yield Rejection("malformed_record", path, row_no, str(e)[:300])
                row_no += 1
                continue
            if len(fields) <= max(url_index, caption_index):
                yield Rejection("malformed_record", path, row_no, f"{len(fields)} fields, header has {len(header)}")
            elif not _is_utf8(fields[url_index]) or not _is_utf8(fields[caption_index]):
                yield Rejection("non_utf8", path, row_no, "undecodable bytes")
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


# ---- column checks, run before any work ----

def _require_columns(path: str, names: list[str], options: PoolOptions) -> tuple[int, int]:
    for flag, column in (("--url-col", options.url_col), ("--caption-col", options.caption_col)):
        if column not in names:
            shown = ", ".join(repr(n) for n in names[:20])
            raise PoolFormatError(f"{path}: no column {column!r} (columns: {shown}); name the right one with {flag}")
    return names.index(options.url_col), names.index(options.caption_col)


def check_table_columns(path: str, opener: Opener, options: PoolOptions) -> None:
    """Raise PoolFormatError naming the file and column when a table lacks the url or caption column.

    Reads only the parquet footer, the csv/tsv header or the first parseable jsonl object.
    """
    fmt = detect_format(path, options.fmt)
    if fmt == "wat":
        return
    with opener(path) as fh:
        if fmt == "parquet":
            try:
                names = pq.ParquetFile(fh).schema_arrow.names
            except (pa.ArrowException, OSError) as e:
                raise PoolFormatError(f"{path}: not a readable parquet file ({e})") from e
            _require_columns(path, names, options)
            return
        stream = _maybe_gunzip(fh)
        if fmt == "jsonl":
            for line_no, line in enumerate(stream):
                if line_no >= 1000:
                    break
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                if isinstance(doc, dict):
                    _require_columns(path, list(doc), options)
                    return
            raise PoolFormatError(f"{path}: no JSON object in the first lines; is this a jsonl file?")
        header = next(csv.reader(io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline=""),
                                 delimiter="\t" if fmt == "tsv" else ","), None)
        _require_columns(path, header or [], options)
