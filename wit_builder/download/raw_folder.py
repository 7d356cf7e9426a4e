"""The ``--out`` folder of a download: its raw shards, ``plan.json`` (the output's identity), ``stats.json``.

A shard is complete when its three files exist (``{shard}.tar``, ``{shard}.parquet``, then ``{shard}_stats.json``,
each written temp-then-rename, the stats last); a rerun skips complete shards. A rerun must cut the same
shards with the same settings, else skipping them would mix two runs: :func:`check_plan` refuses it (naming
what differs) unless ``--overwrite`` deletes the earlier run first (:func:`remove_run`).

Files are handled through :mod:`wit_builder.beam.fileio` (local folders and object stores alike).
"""

from __future__ import annotations

from typing import Any

from schemas import stats as stats_schema
from wit_builder.beam import fileio
from wit_builder.core.errors import InputError
from wit_builder.download import raw_shards
from wit_builder.download.plan import PLAN_JSON, plan_conflict

STATS_JSON = stats_schema.STATS_JSON
ERROR_KINDS_FILE = "_error_kinds.json"  # error kind -> rows, summed by the pipeline; read and removed by finish


class RawFolderError(InputError):
    """``--out`` holds raw shards this run must not mix with; the message says what differs and what to do."""


def shard_paths(out: str, shard_id: int) -> tuple[str, str, str]:
    """(tar, parquet, stats) paths of a raw shard in ``out``; the stats file is written last."""
    tar, parquet, stats = raw_shards.shard_files(shard_id)
    return fileio.join(out, tar), fileio.join(out, parquet), fileio.join(out, stats)


def shard_complete(out: str, shard_id: int) -> bool:
    """Whether all three files of the shard exist (a complete shard; a rerun skips it)."""
    return all(fileio.exists(p) for p in shard_paths(out, shard_id))


def remove_leftovers(out: str, shard_id: int) -> None:
    """Delete the temporary files a killed attempt at this shard left behind (never a final name)."""
    fileio.delete(fileio.match(fileio.join(out, f"{raw_shards.shard_name(shard_id)}*.tmp-*")))


def run_files(out: str) -> list[str]:
    """A download run's files in ``out``: shards, their temporaries, plan.json and stats.json."""
    names = [f"{'[0-9]' * raw_shards.SHARD_DIGITS}*", PLAN_JSON, STATS_JSON, f"{PLAN_JSON}.tmp-*",
             f"{STATS_JSON}.tmp-*"]
    return [path for name in names for path in fileio.match(fileio.join(out, name))]


def remove_run(out: str) -> list[str]:
    """Delete a download run's files from ``out`` (:func:`run_files`); returns their paths."""
    found = run_files(out)
    fileio.delete(found)
    return found


def check_plan(out: str, plan: dict[str, Any], overwrite: bool) -> bool:
    """Whether ``out`` holds this very plan (the run resumes); False when the folder is to be started afresh
    (no run there yet, or ``overwrite`` and another run there). Writes nothing.

    Raises RawFolderError when ``out`` holds another run (its plan.json differs, naming what, or shards without
    a plan.json, whose settings are unknown) and ``overwrite`` is False; ValueError naming a plan.json that is
    not a JSON object.
    """
    path = fileio.join(out, PLAN_JSON)
    if fileio.exists(path):
        # json_safe: a plan.json of an earlier version holds Infinity where this one writes "inf"
        conflict = plan_conflict(out, stats_schema.json_safe(fileio.read_json_object(path)), plan)
        if conflict is None:
            return True
        if not overwrite:
            raise RawFolderError(conflict)
    elif not overwrite and run_files(out):
        # Shards without a plan (plan.json deleted, or another tool's output): their settings are unknown.
        raise RawFolderError(f"{out} holds raw shards but no {PLAN_JSON}, so the settings they were made with are "
                             "unknown; use a fresh --out, or pass --overwrite to delete those shards and download "
                             "again")
    return False


def write_plan(out: str, plan: dict[str, Any]) -> None:
    """Record this run's plan (before any shard is written)."""
    fileio.write_json(fileio.join(out, PLAN_JSON), plan)


def take_error_kinds(out: str) -> dict[str, int]:
    """The pipeline's error kind -> rows table (``ERROR_KINDS_FILE``), removed from ``out`` once read."""
    return fileio.take_counts(fileio.join(out, ERROR_KINDS_FILE))


def _untimed(doc: dict[str, Any]) -> Any:
    """A stats document as written, without its timings (earlier files may hold Infinity: json_safe)."""
    return stats_schema.json_safe({k: v for k, v in doc.items() if k != "timings"})


def write_stats(out: str, doc: dict[str, Any], unchanged_run: bool) -> None:
    """Write stats.json; a rerun that downloaded nothing (``unchanged_run``) keeps the file when only its timings
    would change."""
    path = fileio.join(out, STATS_JSON)
    if unchanged_run and fileio.exists(path):
        try:
            old = fileio.read_json(path)
            stats_schema.validate(old)
        except (ValueError, OSError):
            old = None
        if old is not None and _untimed(old) == _untimed(doc):
            return
    fileio.write_json(path, doc)
