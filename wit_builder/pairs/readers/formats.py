"""One pool file, any format: which reader reads it (from its name, or ``--pool-format``), whether its content
fits before any work (:func:`check_pool_file`), and its records, one by one (:func:`read_pool_file`) or in
column batches (:func:`read_pool_batches`, what the stage reads). Memory stays flat: nothing is read ahead
beyond a parquet row batch or one WARC record.
"""

from __future__ import annotations

import codecs
import re
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from wit_builder.pairs.readers.columns import BATCH_ROWS, CandidateBatch, parquet_batches
from wit_builder.pairs.readers.layouts import PoolOptions
from wit_builder.pairs.readers.records import Candidate, Opener, PoolFormatError, Rejection
from wit_builder.pairs.readers.tables import check_table, read_table
from wit_builder.pairs.readers.warc import read_warc, read_wat


def detect_format(path: str, fmt: str = "auto") -> str:
    """``fmt``, or when it is ``auto`` the format the file's name says (a gzip suffix aside for tables).

    Raises PoolFormatError for a WET file (no images) or a name that says no format.
    """
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
                yield from read_wat(path, fh, options)
            elif fmt == "warc":
                yield from read_warc(path, fh, options)
            else:
                yield from read_table(path, fh, fmt, options)
    except OSError as e:  # cannot open, or the filesystem failed mid-read
        yield Rejection("unreadable_file", path, -1, f"{type(e).__name__}: {e}")


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
                yield from parquet_batches(path, fh, options, rows)
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


# ---- checks run before any work ----

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
        check_table(path, fh, fmt, options)
