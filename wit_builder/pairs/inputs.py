"""Stage 2's inputs, found and checked before any work (the launcher makes each error one line and exit 2),
and the queries' entries as the workers load them.

Files are read through ``wit_builder.beam.fileio`` (Beam's ``FileSystems``), so gs://, s3:// and hdfs:// inputs
work like local ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from schemas.queries import QUERIES_PARQUET
from wit_builder.beam import fileio
from wit_builder.pairs.match_rules import entries_column
from wit_builder.pairs.match_rules import validate as validate_entries
from wit_builder.pairs.matcher import sorted_entries
from wit_builder.pairs.readers.formats import check_pool_file
from wit_builder.pairs.readers.layouts import PoolOptions


@dataclass(frozen=True)
class QueriesFile:
    """The queries a run matches: stage 1's ``queries.parquet``, its sha256 (the workers' cache tag: a changed
    file is loaded again) and the match rule that picks its column (``wit_builder.pairs.match_rules``)."""

    path: str
    sha256: str
    match_rule: str


@dataclass(frozen=True)
class PairsInputs:
    """What a run of stage 2 reads, found and checked before any work (``BuildPairsStage.resolve``)."""

    queries: QueriesFile          # the queries file the pairs are matched against
    query_count: int              # its rows (queries)
    pool_files: tuple[str, ...]   # every pool file, sorted, each one's format and columns checked
    pool: PoolOptions             # how they are read (``PoolFileOptions.reader_options``)
    buckets: int = 256            # uid buckets of the shuffle: --shuffle-buckets, else batches.buckets_for


def queries_path(folder: str) -> str:
    """``FOLDER/queries.parquet``; FileNotFoundError naming it (and ``--queries``) when it is missing."""
    path = fileio.join(folder, QUERIES_PARQUET)
    if not fileio.exists(path):
        raise FileNotFoundError(f"{path} not found; run 'wit build-queries' first or fix --queries")
    return path


def check_entries(path: str, match_rule: str) -> int:
    """The number of queries in ``path`` (rows); ValueError naming the first entry ``match_rule`` cannot use
    (``wit_builder.pairs.match_rules.validate``) or the missing column."""
    entries = _entries(path, match_rule)
    validate_entries(entries, match_rule, path)
    return len(entries)


def pool_files(patterns: Iterable[str], options: PoolOptions) -> list[str]:
    """Every pool file of ``--pool`` (paths or globs), sorted; each one's format and columns checked
    (``readers.formats.check_pool_file``: a wrong format, a missing or mistyped column fails here, before any work).
    Raises FileNotFoundError for a pattern that matches no file, ``PoolFormatError`` for a file that cannot be
    read as configured."""
    files = fileio.expand_patterns(patterns, "pool")
    for path in files:
        check_pool_file(path, fileio.open_read, options)
    return files


def load_entries(queries: QueriesFile) -> pa.Array:
    """The matcher's sorted distinct entries as a string array: query id i is element i."""
    return pa.array(sorted_entries(_entries(queries.path, queries.match_rule)), pa.string())


def _entries(path: str, match_rule: str) -> list:
    """Every entry of the queries file at ``path`` in the column ``match_rule`` matches with, as stored."""
    table = fileio.read_parquet(path)
    return table.column(entries_column(table, match_rule)).to_pylist()
