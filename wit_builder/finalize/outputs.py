"""Stage 4's output folder around the pipeline run (file planning, no Beam; files through
``wit_builder.beam.fileio``).

- :func:`start_rerun`: before any work, the completion files of an earlier run (stats.json first) and the
  ``*.tmp-*`` files killed writers left go, so that a killed rerun never looks complete;
- :func:`read_written_sizes`, :func:`read_query_counts`: the tables the pipeline hands over (the written shard
  sizes, a transient file; the per-query counts, an output);
- :func:`write_summary`: after the accounting checks, the plots, the stale files of an earlier run removed,
  then the completion files: sizes.json, DATASET.md and stats.json very last.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from schemas.finalize import (
    ACCOUNTING_DIR,
    DATASET_CARD,
    IMAGE_SIZES_PNG,
    QUERY_COUNTS_PARQUET,
    QUERY_COUNTS_PNG,
    ROWS_DIR,
    SIZES_JSON,
    STATS_JSON,
)
from wit_builder.beam import fileio
from wit_builder.finalize import dataset_card
from wit_builder.finalize.stats import QueryCount

# Written last, removed first: their presence says the folder holds a complete run.
COMPLETION_FILES = (STATS_JSON, SIZES_JSON, DATASET_CARD)
WRITTEN_SIZES = "_sizes.json"  # shard name -> samples written: by the pipeline, read and removed after the run
logger = logging.getLogger(__name__)


def start_rerun(out: str) -> list[str]:
    """Before writing anything: delete the completion files of an earlier run (stats.json first), so that a
    killed rerun never looks complete, and the ``*.tmp-*`` files killed writers left behind; the paths removed."""
    removed = [p for p in (fileio.join(out, name) for name in COMPLETION_FILES) if fileio.exists(p)]
    fileio.delete(removed)
    folders = (out, fileio.join(out, ACCOUNTING_DIR), fileio.join(out, ROWS_DIR))
    orphans = [path for folder in folders for path in fileio.match(fileio.join(folder, "*.tmp-*"))]
    fileio.delete(orphans)
    return removed + orphans


def remove_stale_outputs(out: str, keep_shards: Iterable[str], keep_raw_names: Iterable[str]) -> list[str]:
    """Delete final shards and accounting parquets of an earlier run that this run did not write; the paths."""
    keep_shards, keep_raw = set(keep_shards), set(keep_raw_names)
    stale = []
    for ext in ("tar", "parquet"):
        for path in fileio.match(fileio.join(out, f"*.{ext}")):
            name = path.rsplit("/", 1)[-1][: -len(ext) - 1]
            if name.isdigit() and name not in keep_shards:
                stale.append(path)
    for path in fileio.match(fileio.join(out, ROWS_DIR, "*.parquet")):
        if path.rsplit("/", 1)[-1][: -len(".parquet")] not in keep_raw:
            stale.append(path)
    fileio.delete(stale)
    return stale


def read_written_sizes(out: str) -> dict[str, int]:
    """Final shard name -> samples written, as the pipeline wrote them to ``OUT/_sizes.json``; the file is removed
    after reading (every run rewrites it)."""
    return fileio.take_counts(fileio.join(out, WRITTEN_SIZES))


def read_query_counts(out: str) -> list[QueryCount]:
    """``accounting/query_counts.parquet`` (written by the pipeline, sorted by query) as (query, input, final)."""
    table = fileio.read_parquet(fileio.join(out, QUERY_COUNTS_PARQUET))
    return [(row["query"], row["input"], row["final"]) for row in table.to_pylist()]


def write_summary(out: str, stats: Mapping[str, Any], query_counts: Sequence[QueryCount], sizes: Mapping[str, int],
                  document: Mapping[str, Any]) -> None:
    """The files written after the run, once the accounting holds: the plots, the stale shards and accounting
    parquets of an earlier run removed, then the completion files, stats.json (``document``) very last.

    ``stats``: ``wit_builder.finalize.stats.summarize``'s stats with the ``settings``; ``sizes``: shard name ->
    samples (sizes.json).
    """
    fileio.write_bytes(fileio.join(out, IMAGE_SIZES_PNG), dataset_card.plot_image_sizes(stats["image_sizes"]))
    fileio.write_bytes(fileio.join(out, QUERY_COUNTS_PNG),
                       dataset_card.plot_query_counts(query_counts, stats["settings"]["per_query_cap"]))
    stale = remove_stale_outputs(out, sizes, stats["input"]["files"])
    if stale:
        logger.info("finalize: removed %d files of an earlier run that this run did not write", len(stale))
    # The completion files last, stats.json very last: a run killed before them never looks complete.
    fileio.write_json(fileio.join(out, SIZES_JSON), dict(sizes))
    fileio.write_bytes(fileio.join(out, DATASET_CARD), dataset_card.render_card(stats, query_counts).encode())
    fileio.write_json(fileio.join(out, STATS_JSON), dict(document))
