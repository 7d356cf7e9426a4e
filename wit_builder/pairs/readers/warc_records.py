"""Record-level reading of WARC-format files (WAT and WARC): every record, its offset, and the damaged stretches.

``iter_records`` walks the WARC records of one file with FastWARC (Rust, Apache-2.0, part of the Resiliparse
toolkit) and reports damage instead of raising: a gzip member that is cut, corrupt or holds no WARC record
is reported once and reading resumes at the next gzip member that starts a WARC record (Common Crawl writes
one member per record, so only the damaged record is lost). Offsets are byte offsets of records in the file
as stored, as warcio and CDX indexes give them. ``record_extent`` and ``next_gzip_record`` give the same
checks to the warcio-based WARC reader (:mod:`wit_builder.pairs.readers.warc`).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

from fastwarc.warc import ArchiveIterator, WarcRecord, WarcRecordType

_GZIP_MAGIC = b"\x1f\x8b\x08"
_CHUNK = 1 << 16
_CONTENT_LENGTH = re.compile(rb"\r\nContent-Length:[ \t]*(\d{1,18})[ \t]*\r\n", re.IGNORECASE)
# WarcRecordType values are not hashable: the table is keyed by their int.
_TYPE_NAMES = {int(getattr(WarcRecordType, name)): name for name in (
    "warcinfo", "response", "resource", "request", "metadata", "revisit", "conversion", "continuation")}


class Record(NamedTuple):
    """One WARC record: its offset in the file as stored, ``WARC-Type`` and target URI as written, the
    ``Content-Length`` it declares (bytes), and its block (``body``) when the caller asked for it."""

    offset: int
    warc_type: str | None
    target_uri: str | None
    length: int
    body: bytes | None


class Damage(NamedTuple):
    """A stretch of the file that holds no readable record: ``truncated_file`` or ``malformed_record``."""

    reason: str
    offset: int
    detail: str


def iter_records(fh: BinaryIO, read_types: frozenset[str]) -> Iterator[Record | Damage]:
    """Every WARC record of a (gzipped or plain) WARC-format file, and every damaged stretch, in file order.

    The block of each record whose type is in ``read_types`` is read whole. A record is given out once the
    next one has started or, for the last, once its end has been checked, so a record cut short at the end
    of the file is one ``truncated_file`` Damage (its block complete, it still counts as a record). A
    failure inside a record is reported at that record's offset, ``truncated_file`` when the file ends
    inside it, else ``malformed_record``, and reading resumes at the next record start: the next gzip
    member that holds a WARC record (Common Crawl writes one member per record) or, uncompressed, the next
    ``WARC/1.x`` line.
    """
    end = fh.seek(0, 2)
    start = 0
    while True:
        fh.seek(start)
        held: Record | None = None  # the last record read, given out when the next starts or its end is checked
        seen = False
        try:
            for record in ArchiveIterator(fh, parse_http=False):
                seen = True
                if held is not None:
                    yield held
                    held = None
                offset, warc_type = record.stream_pos, _type_name(record)
                headers = record.headers
                if headers.get("Content-Length") is None:  # FastWARC stops quietly at a header cut by the EOF
                    yield Damage("truncated_file", offset, "the file ends inside this record's header")
                    continue
                body = None
                if warc_type in read_types:
                    body = record.reader.read()
                    if len(body) < record.content_length:
                        detail = f"record has {len(body)} of {record.content_length} bytes"
                        yield Damage("truncated_file", offset, detail)
                        continue
                held = Record(offset, warc_type, headers.get("WARC-Target-URI"), record.content_length, body)
        except BaseException as e:  # FastWARC raises OSError (a Rust panic: a BaseException) for damaged input
            if isinstance(e, (KeyboardInterrupt, SystemExit, GeneratorExit)):
                raise
            at = start
            if held is not None:  # the failure came after its header: in its block, or in the next record
                state, after = record_extent(fh, held.offset)
                if state == "whole":
                    yield held
                    at = after
                else:
                    at = held.offset
            resume = next_gzip_record(fh, at + 1)
            cut = resume is None and record_extent(fh, at)[0] == "cut"
            resumed = f"resumed at offset {resume}" if resume is not None else "no later record"
            yield Damage("truncated_file" if cut else "malformed_record", at, f"{describe(e)}; {resumed}")
            if resume is None:
                return
            start = resume
            continue
        # FastWARC ends quietly where the file ends inside a gzip member or a record: say so.
        if held is not None:
            yield from _check_end(fh, held, end)
        elif not seen and start < end:
            yield Damage("truncated_file", start, f"{end - start} bytes hold no record")
        return


def _check_end(fh: BinaryIO, held: Record, end: int) -> Iterator[Record | Damage]:
    """The last record (when its data is whole) and a report of any bytes after it that hold no record."""
    state, after = record_extent(fh, held.offset)
    if state in ("whole", "unknown") or (state == "cut" and held.body is not None and _block_whole(fh, held)):
        # Whole, or its block complete with only the gzip trailer or closing CRLFs cut: the data is all there.
        yield held
    else:
        yield Damage("truncated_file", held.offset, "the file ends inside this record")
        return
    if state == "whole" and after < end:
        yield Damage("truncated_file", after, f"{end - after} bytes hold no record")


def _block_whole(fh: BinaryIO, record: Record) -> bool:
    """Whether the file, cut inside ``record``, still holds its whole header and declared block (a cut in
    the header can leave a shorter Content-Length that the short block matches)."""
    fh.seek(record.offset)
    data = fh.read()
    if data.startswith(_GZIP_MAGIC):
        try:
            data = zlib.decompressobj(wbits=31).decompress(data)
        except zlib.error:
            return False
    header_end = data.find(b"\r\n\r\n")
    found = _CONTENT_LENGTH.search(data, 0, header_end + 2) if header_end >= 0 else None
    return found is not None and int(found.group(1)) == record.length and len(data) >= header_end + 4 + record.length


def _type_name(record: WarcRecord) -> str | None:
    name = _TYPE_NAMES.get(int(record.record_type))
    return name if name is not None else record.headers.get("WARC-Type")


def describe(error: BaseException) -> str:
    """Printable one-line error text (readers quote the damaged bytes)."""
    return f"{type(error).__name__}: {ascii(str(error).strip()[:200])[1:-1]}"


def record_extent(fh: BinaryIO, offset: int) -> tuple[str, int]:
    """("whole", end offset) of the record at ``offset`` (its gzip member or, uncompressed, header + declared
    block + CRLF CRLF), ("cut", -1) when the file ends inside it, ("damaged", -1) when its gzip data is
    corrupt, ("unknown", -1) when no record starts there (FastWARC's offsets in a file gzipped whole)."""
    fh.seek(offset)
    head = fh.read(_CHUNK)
    if head.startswith(_GZIP_MAGIC):
        inflater = zlib.decompressobj(wbits=31)
        position, data = offset, head
        while data:
            try:
                inflater.decompress(data, _CHUNK)
                # Bounded output: a huge record never sits in memory. (At the member's end zlib keeps the rest
                # in unconsumed_tail as well as unused_data: stop there, or the loop never ends.)
                while inflater.unconsumed_tail and not inflater.eof:
                    inflater.decompress(inflater.unconsumed_tail, _CHUNK)
            except zlib.error:
                return "damaged", -1
            if inflater.eof:
                return "whole", position + len(data) - len(inflater.unused_data)
            position += len(data)
            data = fh.read(_CHUNK)
        return "cut", -1
    if not head.startswith(b"WARC/"):
        return ("cut", -1) if _GZIP_MAGIC.startswith(head) and head else ("unknown", -1)
    header_end = head.find(b"\r\n\r\n")
    if header_end < 0:
        return ("cut", -1) if len(head) < _CHUNK else ("damaged", -1)
    found = _CONTENT_LENGTH.search(head, 0, header_end + 2)
    if found is None:
        return "damaged", -1
    after = offset + header_end + 4 + int(found.group(1)) + 4
    return ("whole", after) if after <= fh.seek(0, 2) else ("cut", -1)


def next_gzip_record(fh: BinaryIO, position: int) -> int | None:
    """Offset of the next record start at or after ``position``: a gzip member whose content starts a WARC
    record, or a ``WARC/1.0`` / ``WARC/1.1`` line (an uncompressed file). Both are looked for, so a file
    whose first bytes are damaged is still resynchronized."""
    read_at = max(position - 1, 0)  # a line start needs its "\n"
    buffer = b"\n" if position == 0 else b""
    buffer_start = read_at - len(buffer)  # file offset of buffer[0]
    keep = 10  # a marker may straddle two chunks
    while True:
        fh.seek(read_at)
        chunk = fh.read(_CHUNK)
        if not chunk:
            return None
        read_at += len(chunk)
        buffer += chunk
        found = [buffer_start + i for i in _find_all(buffer, _GZIP_MAGIC)
                 if buffer_start + i >= position and _starts_warc_member(fh, buffer_start + i)]
        found += [buffer_start + i + 1 for i in _find_all(buffer, b"\nWARC/1.")
                  if buffer_start + i + 1 >= position and buffer[i + 8 : i + 11] in (b"0\r\n", b"1\r\n")]
        if found:
            return min(found)
        drop = max(len(buffer) - keep, 0)
        buffer_start += drop
        buffer = buffer[drop:]


def _find_all(buffer: bytes, marker: bytes) -> Iterator[int]:
    index = buffer.find(marker)
    while index >= 0:
        yield index
        index = buffer.find(marker, index + 1)


def _starts_warc_member(fh: BinaryIO, offset: int) -> bool:
    here = fh.tell()
    fh.seek(offset)
    try:
        head = zlib.decompressobj(wbits=31).decompress(fh.read(4096), 16)
    except zlib.error:
        head = b""
    fh.seek(here)
    return head.startswith(b"WARC/")
