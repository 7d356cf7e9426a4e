"""Helpers shared by the pool readers' tests: read a pool file record by record, and view what came out."""

from __future__ import annotations

from pathlib import Path

from wit_builder.beam.fileio import open_read
from wit_builder.pairs.readers.formats import read_pool_file
from wit_builder.pairs.readers.layouts import PoolOptions
from wit_builder.pairs.readers.records import Candidate, Rejection


def read(path: Path, **options) -> list[Candidate | Rejection]:
    """Every record of the pool file ``path`` as the reader yields it (``options``: ``PoolOptions`` fields)."""
    return list(read_pool_file(str(path), open_read, PoolOptions(**options)))


def candidates(items) -> list[tuple[str, str]]:
    """(url, caption) of the candidates among ``items``."""
    return [(c.url, c.caption) for c in items if isinstance(c, Candidate)]


def rejections(items) -> list[tuple[str, int]]:
    """(reason, record) of the rejections among ``items``."""
    return [(r.reason, r.source_record) for r in items if isinstance(r, Rejection)]


def captions(items) -> list[str]:
    """The captions of the candidates among ``items``."""
    return [c.caption for c in items if isinstance(c, Candidate)]
