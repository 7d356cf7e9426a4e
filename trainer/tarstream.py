"""Tar members of a WebDataset shard read as a stream (local files and pipes alike), with damaged headers found,
reported and skipped instead of silently ending the shard.

Python's ``tarfile`` in stream mode (what webdataset reads with) takes a header block whose checksum fails after
the first member for the end of the archive: the shard ends there without an error and its later samples are
never seen. This reader does what GNU tar does on such a block ("Skipping to next header"): it reports the byte
offset and scans forward block by block to the next header whose checksum holds, so one damaged header costs
one member, and the caller can count the sample it belonged to.

Formats: POSIX ustar, GNU (``L`` long names, ``K`` long link names) and pax (``x`` per-member ``path`` and
``size``; ``g`` global headers are skipped), as webdataset's ``TarWriter`` and GNU tar write them.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

BLOCK = tarfile.BLOCKSIZE  # 512 bytes
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_META = re.compile(r"__[^/]*__($|/)")  # webdataset's skip_meta: members such as __meta__ are not sample parts
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext: key and every extension

OnDamage = Callable[[int, str], None]


class TruncatedTar(ValueError):
    """The stream ended inside a member's header or data (a cut download, a partial copy)."""


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    """``n`` bytes, fewer only at the end of the stream (pipes return short reads)."""
    parts, left = [], n
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _pax_records(data: bytes) -> dict[str, str]:
    """A pax extended header's ``"%d %s=%s\\n"`` records (POSIX.1-2001) as a dict; malformed records are ignored."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            break
        if length <= 0:
            break
        record = data[space + 1:pos + length].rstrip(b"\n")
        key, _, value = record.partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def tar_members(stream: BinaryIO, on_damage: OnDamage) -> Iterator[tuple[str, bytes]]:
    """The regular members of a tar stream in order, as (name, data).

    A header block that is not a valid header (bad checksum, garbage) where one is due calls
    ``on_damage(offset, message)`` once per damaged stretch, with the byte offset of its first block, and the
    reader resumes at the next valid header. Zero blocks end the archive unless a valid header follows them
    (concatenated archives); damaged blocks after them are reported too.

    Raises TruncatedTar when the stream ends inside a header or a member's data.
    """
    offset = 0
    long_name: str | None = None
    pax: dict[str, str] = {}
    damaged_since: int | None = None  # offset of the first block of the current damaged stretch
    while True:
        block = _read_exactly(stream, BLOCK)
        if not block:
            return
        if len(block) < BLOCK:
            raise TruncatedTar(f"the stream ends inside a header block at byte {offset}")
        here, offset = offset, offset + BLOCK
        if block.count(0) == BLOCK:  # end-of-archive marker or padding: keep looking for a following header
            damaged_since = None
            continue
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError:
            if damaged_since is None:
                damaged_since = here
                on_damage(here, "damaged tar header (bad checksum)")
            continue
        damaged_since = None
        size = int(pax["size"]) if "size" in pax and pax["size"].isdigit() else info.size
        data = _read_exactly(stream, size)
        if len(data) < size:
            raise TruncatedTar(f"the stream ends inside member {info.name!r} (header at byte {here}): "
                               f"{len(data)} of {size} bytes")
        padding = _padded(size) - size
        if padding and len(_read_exactly(stream, padding)) < padding:
            raise TruncatedTar(f"the stream ends in the padding of member {info.name!r} (header at byte {here})")
        offset += _padded(size)
        if info.type == tarfile.GNUTYPE_LONGNAME:
            long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            continue
        if info.type == tarfile.XHDTYPE:
            pax = _pax_records(data)
            continue
        if info.type in (tarfile.XGLTYPE, tarfile.GNUTYPE_LONGLINK):
            continue
        name = pax.get("path") or long_name or info.name
        long_name, pax = None, {}
        if info.type in _REGULAR:
            yield name, data


def group_samples(members: Iterable[tuple[str, bytes] | None], url: str) -> Iterator[dict]:
    """Members grouped into samples by key (``KEY.EXT`` -> ``{"__key__": KEY, "__url__": url, EXT: data}``), as
    webdataset's ``group_by_keys`` does: consecutive members of one key form one sample, extensions lowercased,
    members named like ``__meta__`` skipped. A ``None`` item marks damage at that point of the stream: the
    sample open there and the next one get ``"__damaged__": True`` (the lost member belonged to one of them).
    When ``members`` raises, the sample open at that point is yielded first (as webdataset does).

    Raises ValueError for two members of one sample with the same extension.
    """
    current: dict | None = None
    mark_next = False
    items = iter(members)
    while True:
        try:
            item = next(items)
        except StopIteration:
            break
        except Exception:  # the stream broke (truncated): the sample read so far still comes out, then the error
            if current is not None:
                yield current
            raise
        if item is None:
            if current is not None:
                current["__damaged__"] = True
            mark_next = True
            continue
        name, data = item
        if "/" not in name and _META.match(name):
            continue
        match = _KEY_EXT.match(name)
        if not match:
            continue
        key, ext = match.group(1), match.group(2).lower()
        if current is None or current["__key__"] != key:
            if current is not None:
                yield current
            current = {"__key__": key, "__url__": url}
            if mark_next:
                current["__damaged__"], mark_next = True, False
        if ext in current:
            raise ValueError(f"{url}: two members {name!r} in one sample")
        current[ext] = data
    if current is not None:
        yield current
