"""English Wikipedia traffic from Wikimedia pageview dump files (``pageviews-YYYYMMDD-HHMMSS[.gz|.bz2]``).

Each line is ``domain_code page_title count_views total_response_size``. Only English Wikipedia rows count:
domain ``en`` (desktop) and ``en.m`` (mobile); other projects (``en.d`` = Wiktionary, ``de``, ...) are not
ours. Titles are turned into canonical page titles (underscores to spaces, percent-escapes decoded, first
letter upper-cased) so they join with the dump's titles and redirects.
"""

from __future__ import annotations

import bz2
import gzip
import io
from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import unquote

from wit_builder.wikitext import canonical_title

ENWIKI_DOMAINS = frozenset({"en", "en.m"})


def open_text(raw: BinaryIO, path: str) -> io.TextIOWrapper:
    """The lines of a pageview file, decompressed by its suffix (``.gz``, ``.bz2`` or none)."""
    if path.endswith(".gz"):
        raw = gzip.GzipFile(fileobj=raw)
    elif path.endswith(".bz2"):
        raw = bz2.BZ2File(raw)
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="\n")


def parse_line(line: str) -> tuple[str, int] | None | str:
    """(canonical title, views) for an English Wikipedia row; None for another project's row;
    the string "malformed" for a line that is not ``domain title views bytes``."""
    fields = line.split(" ")
    if len(fields) != 4 or not fields[2].isdigit():
        return "malformed"
    if fields[0] not in ENWIKI_DOMAINS:
        return None
    title = canonical_title(unquote(fields[1]) if "%" in fields[1] else fields[1])
    return (title, int(fields[2])) if title else "malformed"


def read_pageviews(lines: io.TextIOBase) -> Iterator[tuple[str, int] | str]:
    """(title, views) per English Wikipedia row, and "malformed" per unreadable line; other rows are skipped."""
    for line in lines:
        parsed = parse_line(line.rstrip("\n"))
        if parsed is not None:
            yield parsed
