"""What one pool record becomes: a :class:`Candidate` (a usable pair) or a :class:`Rejection` (its reason,
file and offset); and :class:`PoolFormatError`, for a file that cannot be read at all as configured.

Record offsets (``source_record``): for WAT and WARC files the byte offset of the WARC record in the file as
stored (what ``warcio`` and CDX indexes use); for parquet and csv/tsv the 0-based data row index (the header
is not a row); for jsonl the 0-based line number. ``-1`` when the file could not be opened at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from wit_builder.core.errors import InputError

# Ordinary web content that is not a pair: counted only.
FILTER_REASONS = ("data_uri", "empty_caption", "missing_url", "non_http_url", "invalid_url", "non_html")
# Damaged or hostile input: counted and reported with file and offset.
BAD_REASONS = ("url_too_long", "non_utf8", "wrong_type", "malformed_record", "malformed_json", "truncated_file",
               "unreadable_file", "undecodable_caption")

Opener = Callable[[str], contextlib.AbstractContextManager[BinaryIO]]  # path -> open binary file


@dataclass(frozen=True)
class Candidate:
    """A usable pair of one record (a page's image in WAT/WARC files, a row in tables)."""

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
    """A record (or a link of one) that is not a pair: ``reason`` is a FILTER_REASONS or BAD_REASONS entry,
    ``detail`` a short human-readable note (the bad-records list quotes it)."""

    reason: str
    source_file: str
    source_record: int
    detail: str = ""

    @property
    def is_bad(self) -> bool:
        """Whether this is damaged or hostile input (reported in bad_records.jsonl), not ordinary web content."""
        return self.reason in BAD_REASONS


class PoolFormatError(InputError):
    """A pool file that cannot be read at all as configured (unknown or wrong format, missing column)."""
