"""What lies behind a set of raw shards, traced through the files stage 3 and stage 2 leave beside them:
each raw folder's ``plan.json`` names the pairs files the download read (its ``inputs``); a pairs file
carries its match rule (``schemas.pairs.PAIRS``' ``match_rule`` column) and its folder holds stage 2's
``stats.json`` (the balance seed).

- :func:`raw_match_rule`: the one match rule behind the raw shards (finalize's input check: two rules never
  mix). A raw parquet that has a ``match_rule`` column of its own is read directly; pairs written before the
  column existed count as the ``normalized`` rule (the only one there was).
- :func:`pairs_stats_behind`: stage 2's stats.json documents, for the seed check
  (``wit_builder.finalize.inputs.rebalance_seed``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow.parquet as pq

from schemas.pairs import STATS_JSON as PAIRS_STATS_JSON
from wit_builder.beam import fileio
from wit_builder.download.plan import PLAN_JSON
from wit_builder.pairs.match_rules import check_one_rule


def folder_of(path: str) -> str:
    """The folder part of a path or URL (``.`` for a bare file name)."""
    return path.rsplit("/", 1)[0] if "/" in path else "."


def traced_pairs(raw_folders: Iterable[str]) -> list[str]:
    """The pairs files each raw folder's ``plan.json`` names (its ``inputs``), folders in sorted order; a folder
    without plan.json adds nothing. ValueError naming a plan.json that is not a JSON object."""
    found: list[str] = []
    for folder in sorted(set(raw_folders)):
        plan_path = fileio.join(folder, PLAN_JSON)
        if fileio.exists(plan_path):
            found.extend(fileio.read_json_object(plan_path).get("inputs", []))
    return found


def pairs_stats_behind(raw_files: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Stage 2's stats.json documents behind the raw parquets ``raw_files``: stats.json path -> document, read
    from the folders of the pairs files the raw folders' plan.json name. What cannot be traced (no plan.json,
    pairs moved, no stats.json) is left out; ValueError naming a stats.json that is not a JSON object."""
    found: dict[str, dict[str, Any]] = {}
    for pairs_path in traced_pairs(folder_of(f) for f in raw_files):
        stats_path = fileio.join(folder_of(pairs_path), PAIRS_STATS_JSON)
        if stats_path not in found and fileio.exists(stats_path):
            try:
                found[stats_path] = fileio.read_json_object(stats_path)
            except ValueError as exc:
                raise ValueError(f"{exc}; the seed of stage 2 is unknown") from exc
    return found


def _column_rules(path: str) -> set[str | None]:
    """The distinct ``match_rule`` values of a parquet file; {None} when it has no such column. Only the footer
    and that column are read."""
    with fileio.open_read(path) as f:
        parquet = pq.ParquetFile(f)
        if "match_rule" not in parquet.schema_arrow.names:
            return {None}
        return set(parquet.read(columns=["match_rule"]).column("match_rule").unique().to_pylist())


def raw_match_rules(raw_files: Iterable[str]) -> dict[str, set[str | None]]:
    """Per source (a raw parquet with the column, else a pairs file named by its folder's plan.json), its
    rules. Sources that cannot be traced (no plan.json, pairs file gone) are left out."""
    rules: dict[str, set[str | None]] = {}
    folders: set[str] = set()
    for path in raw_files:
        own = _column_rules(path)
        if own != {None}:
            rules[path] = own
        else:
            folders.add(folder_of(path))
    for pairs_path in traced_pairs(folders):
        if fileio.exists(pairs_path):
            rules[pairs_path] = _column_rules(pairs_path)
    return rules


def raw_match_rule(raw_files: Iterable[str]) -> str | None:
    """The one rule behind ``raw_files`` (None when untraceable), or ValueError naming the sources of each."""
    return check_one_rule(raw_match_rules(raw_files), "--raw")
