"""Stream pages out of MediaWiki XML dumps: ``.xml``, ``.xml.bz2`` and multistream ``.xml.bz2`` with an index.

A dump is read as one or more *ranges* of bytes. A plain ``.xml`` or ``.xml.bz2`` file is one range, read by
one worker from start to end. A multistream dump (Wikimedia's ``*-multistream.xml.bz2``: many bz2 streams of
100 pages each, concatenated) comes with an index (``*-multistream-index.txt.bz2``, lines of
``offset:page_id:title``, ``offset`` being the byte where the page's bz2 stream starts). Its distinct offsets
split the file into ranges of whole streams of about ``target_bytes`` each; each range is read with a seek
and decompressed on its own, so the workers of a pipeline read one dump in parallel.

Memory stays flat: bytes are read in fixed chunks, decompressed incrementally and fed to an incremental
XML parser, and every ``<page>`` element is freed as soon as it has been turned into a ``Page``.

Errors name the file and where: a malformed XML stream or a truncated / corrupt bz2 stream raises
``DumpError`` with the path, the byte offset (of the bz2 stream, or of the chunk for plain XML), the XML line
and column where known, and the id of the last page read before it. A single ``<page>`` that lacks its
title, namespace or id does not stop the file: it comes out as a ``Page`` whose ``problem`` says why.

Every export schema from 0.3 to 0.11 reads the same way. Pages without ``<ns>`` (schemas before 0.6) get their
namespace from the title's prefix, looked up in the dump's ``<siteinfo>`` namespace list (or in English
Wikipedia's canonical names when the range has no ``<siteinfo>``); a redirect without ``<redirect title=...>``
is recognised by its text (``#REDIRECT [[Target]]``). A history dump (every revision of every page) yields
each page once with its latest revision (greatest ``<timestamp>``, later in the file on ties); each revision
is freed as soon as it is read, so a page with a long history costs the memory of one revision. UTF-16
files (with a byte-order mark) are read like UTF-8 ones: expat detects the encoding.

File access goes through an ``opener`` (path -> binary file context manager supporting ``seek``), so the
pipeline can pass Beam's FileSystems and tests can pass ``open``.
"""

from __future__ import annotations

import bz2
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO

from wit_builder.core.errors import InputError

Opener = Callable[[str], AbstractContextManager[BinaryIO]]

CHUNK_BYTES = 1 << 20  # bytes read (compressed) per step
# English Wikipedia's namespace names (canonical and local aliases), for ranges without a <siteinfo>.
DEFAULT_NAMESPACES = {
    "media": -2, "special": -1, "talk": 1, "user": 2, "user talk": 3, "wikipedia": 4, "project": 4,
    "wp": 4, "wikipedia talk": 5, "project talk": 5, "file": 6, "image": 6, "file talk": 7, "image talk": 7,
    "mediawiki": 8, "mediawiki talk": 9, "template": 10, "template talk": 11, "help": 12, "help talk": 13,
    "category": 14, "category talk": 15, "portal": 100, "portal talk": 101, "draft": 118, "draft talk": 119,
    "timedtext": 710, "timedtext talk": 711, "module": 828, "module talk": 829,
}
_REDIRECT_TEXT = re.compile(r"\s*#redirect\s*:?\s*\[\[([^\]|\n]+)", re.I)
DEFAULT_TARGET_BYTES = 64 << 20  # compressed bytes per range: ~ 300 ranges for the 20+ GB enwiki multistream dump
_INDEX_NAME = re.compile(r"-index\d*\.txt(?:-p\d+p\d+)?(?:\.bz2)?$")


class DumpError(InputError):
    """A dump (or its index) cannot be read, or gives no article text; the message names the file and the place."""


@dataclass(frozen=True)
class DumpRange:
    """Bytes ``[start, end)`` of a dump (``end`` None: to the end of the file)."""

    path: str
    start: int = 0
    end: int | None = None
    multistream: bool = False  # the range holds bare <page> elements of a multistream dump


@dataclass(frozen=True)
class Page:
    """One ``<page>`` of the dump: its latest revision's wikitext and where it was read (for error messages)."""

    title: str
    ns: int       # namespace number (0: articles); 0 when missing or bad (see ``problem``)
    page_id: int  # -1 when missing or bad
    redirect: str | None  # the target title of a redirect page
    text: str
    path: str
    offset: int  # byte offset of the bz2 stream holding the page, or of the chunk of a plain .xml file
    problem: str | None = None  # why the page is unusable (missing fields), else None


@dataclass(frozen=True)
class DumpInput:
    """A dump file to read and the multistream index found beside it (None: read it as one stream)."""

    path: str
    index: str | None


def dump_inputs(paths: list[str], exists: Callable[[str], bool]) -> list[DumpInput]:
    """The dumps among ``paths`` (the files ``--dump`` matched), each paired with the first of its
    ``index_candidates`` that ``exists``; index files among ``paths`` are paired, not read as dumps (so the
    list is empty when ``paths`` hold only index files)."""
    dumps = [p for p in paths if not is_index_file(p)]
    return [DumpInput(path, next((c for c in index_candidates(path) if exists(c)), None)) for path in dumps]


def is_index_file(path: str) -> bool:
    """Is ``path`` a multistream index (``...-index.txt``, ``...-index.txt.bz2``, ``...-index1.txt-p1p41242.bz2``)?"""
    return bool(_INDEX_NAME.search(path))


def index_candidates(dump_path: str) -> list[str]:
    """The index file names Wikimedia gives a multistream dump, most likely first.

    ``X-multistream.xml.bz2`` -> ``X-multistream-index.txt.bz2`` (or ``.txt``);
    ``X-multistream1.xml-p1p41242.bz2`` -> ``X-multistream-index1.txt-p1p41242.bz2``.
    """
    if not dump_path.endswith(".bz2"):
        return []
    stem = dump_path[: -len(".bz2")]
    names = []
    if stem.endswith(".xml"):
        base = stem[: -len(".xml")]
        names += [f"{base}-index.txt.bz2", f"{base}-index.txt"]
    m = re.match(r"^(.*multistream)(\d*)\.xml(-p\d+p\d+)?$", stem)
    if m:
        names += [f"{m.group(1)}-index{m.group(2)}.txt{m.group(3) or ''}.bz2"]
    return list(dict.fromkeys(names))


def stream_offsets(index_path: str, opener: Opener) -> list[int]:
    """The sorted distinct bz2 stream offsets (bytes) listed in a multistream index (``offset:page_id:title``
    lines, plain or bz2). Raises DumpError naming the file and line for a bad line, an unreadable or empty index."""
    offsets: set[int] = set()
    with opener(index_path) as raw:
        binary = bz2.BZ2File(raw) if index_path.endswith(".bz2") else raw
        try:
            for lineno, line in enumerate(io.TextIOWrapper(binary, encoding="utf-8"), start=1):
                head = line.split(":", 1)[0]
                if not line.strip():
                    continue
                if not head.isdigit() or ":" not in line:
                    raise DumpError(f"{index_path}: line {lineno} is not 'offset:page_id:title': {line[:80]!r}")
                offsets.add(int(head))
        except (OSError, EOFError, UnicodeDecodeError) as err:
            raise DumpError(f"{index_path}: unreadable multistream index: {err}") from err
    if not offsets:
        raise DumpError(f"{index_path}: the multistream index lists no page")
    return sorted(offsets)


def file_size(path: str, opener: Opener) -> int:
    """The size of a file in bytes (a seek to its end through ``opener``)."""
    with opener(path) as f:
        return f.seek(0, io.SEEK_END)


def plan_ranges(
    path: str, opener: Opener, index_path: str | None = None, target_bytes: int = DEFAULT_TARGET_BYTES
) -> list[DumpRange]:
    """Split a dump into ranges. Without an index the whole file is one range.

    With an index, ranges are runs of consecutive streams of at least ``target_bytes`` (the last one may be
    shorter) starting at the first indexed stream; the header stream before it holds only ``<siteinfo>``.
    Raises DumpError for an unusable index (``stream_offsets``) and for a dump cut short: an index that lists
    streams starting at or past the file's end (a cut exactly between two streams leaves every stream that is
    there whole, so only the index can tell; a cut inside a stream is ``_bz2_chunks``' truncated stream).
    """
    if index_path is None:
        return [DumpRange(path)]
    offsets = stream_offsets(index_path, opener)
    size = file_size(path, opener)
    missing = [offset for offset in offsets if offset >= size]
    if missing:
        raise DumpError(
            f"{path}: truncated: the file ends at byte {size}, but its index {index_path} lists {len(missing)} "
            f"more bz2 stream(s) starting at bytes {missing[0]}..{missing[-1]} (the pages of those streams are "
            "missing); re-download the dump"
        )
    starts = [offsets[0]]
    for offset in offsets[1:]:
        if offset - starts[-1] >= target_bytes:
            starts.append(offset)
    ends: list[int | None] = [*starts[1:], None]
    return [DumpRange(path, start, end, multistream=True) for start, end in zip(starts, ends, strict=True)]


@dataclass(frozen=True)
class SiteInfo:
    """What a dump's ``<siteinfo>`` says about its wiki (``read_siteinfo``)."""

    dbname: str | None                 # ``jawiki``
    base: str | None                   # ``https://ja.wikipedia.org/wiki/メインページ``
    namespaces: dict[int, str]         # namespace number -> its local name (``6`` -> ``ファイル``)


EMPTY_DUMP = SiteInfo(None, None, {})  # what ``read_siteinfo`` gives for a dump without any element
SITEINFO_MAX_BYTES = 1 << 20  # a <siteinfo> is a few KiB; give up on one that has not ended after this much


def read_siteinfo(path: str, opener: Opener) -> SiteInfo | None:
    """The ``<siteinfo>`` at the start of a dump (plain or bz2; a multistream dump's header stream), None
    when the dump has none before its first ``<page>`` (or within ``SITEINFO_MAX_BYTES``), ``EMPTY_DUMP`` for a
    dump without any element (an empty file: no page, nothing to tell). Read errors are left to the run,
    which reports them with their place."""
    parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
    read = 0
    seen = False
    try:
        with opener(path) as f:
            chunks = _bz2_chunks(f, DumpRange(path)) if path.endswith(".bz2") else _plain_chunks(f, DumpRange(path))
            for _, data in chunks:
                parser.feed(data)
                read += len(data)
                for item in parser.read_events():
                    event, elem = item[0], item[-1]
                    if not isinstance(elem, ET.Element):
                        continue
                    seen = True
                    if event == "start" and _local(elem.tag) == "page":
                        return None
                    if event == "end" and _local(elem.tag) == "siteinfo":
                        return _site(elem)
                if read > SITEINFO_MAX_BYTES:
                    return None
    except (ET.ParseError, DumpError, OSError, EOFError):
        return None if seen or read else EMPTY_DUMP
    return None if seen else EMPTY_DUMP


def _site(elem: ET.Element) -> SiteInfo:
    fields = {_local(sub.tag): (sub.text or "").strip() for sub in elem}
    namespaces = {}
    for sub in elem.iter():
        key = sub.get("key") or ""
        if _local(sub.tag) == "namespace" and key.lstrip("-").isdigit() and (sub.text or "").strip():
            namespaces[int(key)] = " ".join((sub.text or "").replace("_", " ").split())
    return SiteInfo(fields.get("dbname") or None, fields.get("base") or None, namespaces)


def read_pages(rng: DumpRange, opener: Opener) -> Iterator[Page]:
    """Every ``<page>`` of a range, in file order (see the module docstring for errors)."""
    reader = _PageReader(rng)
    with opener(rng.path) as f:
        if rng.start:
            f.seek(rng.start)
        chunks = _bz2_chunks(f, rng) if rng.path.endswith(".bz2") else _plain_chunks(f, rng)
        if rng.multistream:  # bare <page> elements: give them a root
            yield from reader.feed(b"<mediawiki>", rng.start)
        try:
            for offset, data in chunks:
                yield from reader.feed(data, offset)
        except DumpError as err:
            if "last whole page" in str(err) or "no whole page was read" in str(err):
                raise
            raise DumpError(f"{err}; {reader.last_page()}") from err
        yield from reader.close()


def _limit(rng: DumpRange, position: int) -> int:
    return CHUNK_BYTES if rng.end is None else min(CHUNK_BYTES, rng.end - position)


# Leading bytes of compressed files that are not XML (the suffix may lie), to name them instead of an XML error.
_COMPRESSED_MAGIC = {
    b"\x1f\x8b": "gzip", b"7z\xbc\xaf\x27\x1c": "7z", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd",
    b"BZh": "bz2", b"PK\x03\x04": "zip",
}


def _plain_chunks(f: BinaryIO, rng: DumpRange) -> Iterator[tuple[int, bytes]]:
    position = rng.start
    while (size := _limit(rng, position)) > 0 and (data := f.read(size)):
        if position == 0:
            kind = next((k for magic, k in _COMPRESSED_MAGIC.items() if data.startswith(magic)), None)
            if kind is not None:
                raise DumpError(
                    f"{rng.path}: {kind}-compressed data, not XML: stage 1 reads .xml and .xml.bz2 dumps"
                    + (" (name it .xml.bz2)" if kind == "bz2" else "; decompress it (or recompress it with bzip2)")
                )
        yield position, data
        position += len(data)


def _bz2_chunks(f: BinaryIO, rng: DumpRange) -> Iterator[tuple[int, bytes]]:
    """Decompressed bytes of consecutive bz2 streams, each tagged with the offset where its stream starts."""
    position = stream_start = rng.start
    decompressor, fed = bz2.BZ2Decompressor(), False
    while (size := _limit(rng, position)) > 0 and (data := f.read(size)):
        position += len(data)
        while data:
            try:
                out = decompressor.decompress(data)
            except OSError as err:
                raise DumpError(
                    f"{rng.path}: corrupt bz2 data in the stream starting at byte {stream_start}: {err}"
                ) from err
            fed = True
            if out:
                yield stream_start, out
            if not decompressor.eof:
                break
            # The stream ended inside this chunk: the rest (if any) starts the next stream.
            data = decompressor.unused_data
            stream_start = position - len(data)
            decompressor, fed = bz2.BZ2Decompressor(), False
    if fed and not decompressor.eof:
        raise DumpError(
            f"{rng.path}: truncated bz2 stream starting at byte {stream_start} (the data ends at byte {position}"
            " before the stream's end marker); re-download the dump"
        )


class _PageReader:
    """An incremental XML parser that turns each finished ``<page>`` element into a ``Page``."""

    def __init__(self, rng: DumpRange) -> None:
        self.rng = rng
        self.parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
        self.stack: list[ET.Element] = []
        self.root_closed = False
        self.fed_any = False
        self.last_page_id: int | None = None
        self.last_title = ""
        self.offset = rng.start
        self.namespaces = dict(DEFAULT_NAMESPACES)
        self.latest: tuple[str, str] | None = None  # (timestamp, text) of the latest revision of the open page

    def last_page(self) -> str:
        """Where reading stopped, for error messages."""
        if self.last_page_id is None:
            return "no whole page was read before it"
        return f"the last whole page read was id {self.last_page_id} {self.last_title!r}"

    def feed(self, data: bytes, offset: int) -> Iterator[Page]:
        self.offset = offset
        if data.strip():
            self.fed_any = True
        try:
            self.parser.feed(data)
            yield from self._drain()
        except ET.ParseError as err:
            raise self._error(err) from err

    def close(self) -> Iterator[Page]:
        if not self.fed_any:
            return  # an empty file is an empty dump, not a malformed one
        try:
            if self.rng.multistream and not self.root_closed:
                self.parser.feed(b"</mediawiki>")
            self.parser.close()
            yield from self._drain()
        except ET.ParseError as err:
            raise self._error(err) from err

    def _error(self, err: ET.ParseError) -> DumpError:
        line, column = getattr(err, "position", (0, 0))
        where = "bz2 stream starting at byte" if self.rng.path.endswith(".bz2") else "chunk starting at byte"
        after = (f"after page id {self.last_page_id} {self.last_title!r} (the last whole page read)"
                 if self.last_page_id is not None else "before any page (no whole page was read)")
        truncated = " (the file ends inside an element: truncated?)" if "no element found" in str(err) else ""
        return DumpError(
            f"{self.rng.path}: malformed XML at line {line}, column {column} of the range starting at byte "
            f"{self.rng.start} ({where} {self.offset}), {after}: {err.msg if hasattr(err, 'msg') else err}"
            f"{truncated}"
        )

    def _drain(self) -> Iterator[Page]:
        for item in self.parser.read_events():
            event, elem = item[0], item[-1]
            if not isinstance(elem, ET.Element):  # only "start"/"end" were asked for: always an element
                continue
            if event == "start":
                self.stack.append(elem)
                continue
            self.stack.pop()
            if not self.stack:
                self.root_closed = True
            name = _local(elem.tag)
            if name == "revision" and self.stack and _local(self.stack[-1].tag) == "page":
                self._revision(elem)
                self.stack[-1].remove(elem)  # history dumps: keep one revision's text, not every revision
                continue
            if name == "siteinfo":
                self._siteinfo(elem)
            if name == "page":
                page = self._page(elem)
                self.latest = None
                if page.problem is None:
                    self.last_page_id, self.last_title = page.page_id, page.title
                yield page
                elem.clear()
                if self.stack:
                    self.stack[-1].remove(elem)  # free the page: memory stays flat however long the dump

    def _revision(self, elem: ET.Element) -> None:
        """Keep the revision's text if it is the page's latest so far (greatest timestamp, later on ties)."""
        timestamp, text = "", ""
        for sub in elem:
            name = _local(sub.tag)
            if name == "timestamp":
                timestamp = (sub.text or "").strip()
            elif name == "text":
                text = sub.text or ""
        if self.latest is None or timestamp >= self.latest[0]:
            self.latest = (timestamp, text)
        elem.clear()

    def _siteinfo(self, elem: ET.Element) -> None:
        """The dump's own namespace names (``<namespaces><namespace key="4">Wikipedia</namespace>``)."""
        names: dict[str, int] = {}
        for sub in elem.iter():
            key = sub.get("key") or ""
            if _local(sub.tag) == "namespace" and key.lstrip("-").isdigit():
                names[" ".join((sub.text or "").replace("_", " ").split()).lower()] = int(key)
        names.pop("", None)
        if names:
            self.namespaces = {**DEFAULT_NAMESPACES, **names}

    def _namespace_of(self, title: str) -> str:
        """The namespace number (as text) a title's prefix names; "0" without a known prefix."""
        prefix, colon, _ = title.partition(":")
        if not colon:
            return "0"
        return str(self.namespaces.get(" ".join(prefix.replace("_", " ").split()).lower(), 0))

    def _page(self, elem: ET.Element) -> Page:
        fields: dict[str, str] = {}
        redirect = None
        text = self.latest[1] if self.latest is not None else ""
        for child in elem:
            name = _local(child.tag)
            if name in ("title", "ns", "id"):
                fields[name] = (child.text or "").strip()
            elif name == "redirect":
                redirect = child.get("title") or ""
        if "ns" not in fields and fields.get("title"):
            fields["ns"] = self._namespace_of(fields["title"])  # schemas before 0.6 have no <ns>
        if not redirect and (m := _REDIRECT_TEXT.match(text)) is not None:
            redirect = m.group(1).strip()  # old schemas: <redirect/> without a title, or none at all
        missing = [name for name in ("title", "ns", "id") if not fields.get(name)]
        bad = [name for name in ("ns", "id") if fields.get(name) and not fields[name].lstrip("-").isdigit()]
        problem = None
        if missing or bad:
            problem = "; ".join(
                [f"missing <{n}>" for n in missing] + [f"<{n}> is not a number: {fields[n]!r}" for n in bad]
            )
        return Page(
            title=fields.get("title", ""),
            ns=int(fields["ns"]) if "ns" not in missing + bad else 0,
            page_id=int(fields["id"]) if "id" not in missing + bad else -1,
            redirect=redirect,
            text=text,
            path=self.rng.path,
            offset=self.offset,
            problem=problem,
        )


def _local(tag: str) -> str:
    """The local name of a possibly namespaced tag ("{http://www.mediawiki.org/xml/export-0.10/}page" -> "page")."""
    return tag.rpartition("}")[2]
