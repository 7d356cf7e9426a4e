"""Stage 3's inputs: the files ``--pairs`` names, their checks before any work, the url shards cut from their url
column, and one shard's rows read back by a worker (only the row groups that hold them).

Files are read through :mod:`wit_builder.beam.fileio`, so ``--pairs`` may name gs://, s3://, ... as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from schemas.pairs import PAIRS_GLOB
from wit_builder.beam import fileio
from wit_builder.core.errors import InputError
from wit_builder.core.table_checks import check_pairs_input
from wit_builder.download.host_shards import HostPlanner
from wit_builder.download.plan import ShardSpec, row_group_selection, shard_specs

# read when present; a missing uid is derived (shard.base_row); lang/lang_score: stage 2's caption language
INPUT_COLUMNS = ("uid", "url", "caption", "queries", "lang", "lang_score")
URL_BATCH_ROWS = 65_536  # url column rows read at once at the launcher


class PairsInputError(InputError):
    """A ``--pairs`` file that cannot be downloaded; the message names the file and what to pass instead."""


@dataclass(frozen=True)
class DownloadInputs:
    """What a run of stage 3 works from, resolved before any work (``DownloadStage.resolve``)."""

    specs: tuple[ShardSpec, ...]  # every url shard of the plan (plan_shards), complete ones included
    plan: dict[str, Any]          # the plan document (plan.plan_document), recorded as OUT/plan.json
    resume: bool                  # --out holds this very plan: the run resumes (raw_folder.check_plan)
    complete: int = 0             # shards already complete in --out when resuming


def input_files(pattern: str) -> list[str]:
    """A file or glob as given; a folder means stage 2's ``pairs-*.parquet`` in it, else all its ``*.parquet``.

    Folders are recognised by name, not by ``exists()``: object stores (gs://, s3://) have no folders.
    FileNotFoundError naming ``--pairs`` when nothing matches.
    """
    if pattern.endswith(".parquet") or any(ch in pattern for ch in "*?["):
        return fileio.expand_patterns([pattern], what="--pairs")
    for name in (PAIRS_GLOB, "*.parquet"):
        try:
            return fileio.expand_patterns([fileio.join(pattern, name)], what="--pairs")
        except FileNotFoundError:
            continue
    raise FileNotFoundError(f"--pairs {pattern!r} holds no {PAIRS_GLOB} nor any *.parquet file")


def _check_footer(path: str, footer: pq.ParquetFile) -> None:
    """PairsInputError (ColumnTypeError for a column's type) naming ``path`` unless its columns are those of
    pairs to download."""
    names = set(footer.schema_arrow.names)
    if "url" not in names:
        raise PairsInputError(f"{path}: no 'url' column (has {sorted(names)}); pass a url/caption parquet")
    if {"key", "status"} <= names:  # a download's own output: its rows were fetched already
        raise PairsInputError(f"{path}: a raw download shard (stage 3's output, it has 'key' and 'status' "
                              "columns); --pairs takes stage 2's pairs (wit build-pairs --out)")
    check_pairs_input(path, footer.schema_arrow)  # types and duplicate names (stage 2's rules): ColumnTypeError


def plan_shards(paths: list[str], rows_per_shard: int) -> list[ShardSpec]:
    """Cut the rows of ``paths`` into url shards of at most ``rows_per_shard`` rows, grouped by host.

    Reads the footers and the url column only (about 20 us and 16 bytes of memory per row at the launcher).
    The same inputs always give the same shards. Rules: ``wit_builder.download.host_shards``. Raises
    PairsInputError (or ColumnTypeError) naming the file for one that is not readable parquet or not pairs.
    """
    planner = HostPlanner()
    offsets: list[int] = []
    for path in paths:
        try:
            with fileio.open_read(path) as f:
                footer = pq.ParquetFile(f)
                _check_footer(path, footer)
                offsets.append(planner.rows)
                for batch in footer.iter_batches(batch_size=URL_BATCH_ROWS, columns=["url"]):
                    planner.add(str(u) if u is not None else None for u in batch.column(0).to_pylist())
        except InputError:  # PairsInputError, ColumnTypeError: they name the file already
            raise
        except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for a bad file
            raise PairsInputError(f"{path}: not a readable parquet file ({e}); pass the pairs of `wit build-pairs`"
                                  ) from e
    return shard_specs(paths, offsets, ((planned.chain, planned.rows) for planned in planner.shards(rows_per_shard)))


def read_shard_rows(spec: ShardSpec) -> list[dict[str, Any]]:
    """The shard's input rows (INPUT_COLUMNS present in the file) in its download order, reading only the row
    groups that hold them."""
    wanted: dict[int, list[int]] = {}
    for file_index, row in spec.members:
        wanted.setdefault(file_index, []).append(row)
    found: dict[tuple[int, int], dict[str, Any]] = {}
    for file_index, rows in sorted(wanted.items()):
        path = spec.paths[file_index]
        targets = sorted(set(rows))
        with fileio.open_read(path) as f:  # seekable: only the footer and the needed row groups are read
            pf = pq.ParquetFile(f)
            columns = [c for c in INPUT_COLUMNS if c in pf.schema_arrow.names]
            sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
            groups, positions = row_group_selection(sizes, targets)
            table = pf.read_row_groups(groups, columns=columns)
            for row, values in zip(targets, table.take(positions).to_pylist(), strict=True):
                found[(file_index, row)] = values
    return [found[m] for m in spec.members]
