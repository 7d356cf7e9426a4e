"""Which match rule the pairs behind a set of raw shards were matched under (finalize's input check).

A raw shard does not carry the rule itself; its download folder's ``plan.json`` names the pairs files
the download read (``inputs``), and each pairs file carries the rule in its ``match_rule`` column
(``schemas.pairs.PAIRS``). A raw parquet that has a ``match_rule`` column of its own is read directly.
Pairs written before the column existed count as the ``normalized`` rule (the only one there was).
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import pyarrow.parquet as pq

from wit_builder.beam import fileio
from wit_builder.finalize.inputs import folder_of
from wit_builder.pairs.match_rules import check_one_rule

PLAN_JSON = "plan.json"  # wit_builder.download.pipeline's plan of a download folder


def _column_rules(path: str) -> set[str | None]:
    """The distinct ``match_rule`` values of a parquet file; {None} when it has no such column."""
    with fileio.open_read(path) as f:
        data = io.BytesIO(f.read())
    if "match_rule" not in pq.ParquetFile(data).schema_arrow.names:
        return {None}
    return set(pq.read_table(data, columns=["match_rule"]).column("match_rule").unique().to_pylist())


def traced_pairs(raw_folders: Iterable[str]) -> list[str]:
    """The pairs files each raw folder's ``plan.json`` names (its ``inputs``), folders in sorted order; a folder
    without plan.json adds nothing. ValueError naming a plan.json that is not a JSON object."""
    found: list[str] = []
    for folder in sorted(set(raw_folders)):
        plan_path = fileio.join(folder, PLAN_JSON)
        if fileio.exists(plan_path):
            found.extend(fileio.read_json_object(plan_path).get("inputs", []))
    return found


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
