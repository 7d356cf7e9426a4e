"""Stage 3's plan as pure functions (``inputs`` reads the files, ``raw_folder`` keeps plan.json).

- :class:`ShardSpec` and :func:`shard_specs`: the url shards cut by ``wit_builder.download.host_shards``, as
  (input file, row) members;
- :func:`row_group_selection`: which row groups of a pairs parquet hold a shard's rows, and where;
- :func:`plan_document`, :func:`output_settings`, :func:`plan_differences`, :func:`plan_conflict`: ``plan.json``,
  the output's identity (a rerun with other inputs or settings is refused, saying what differs).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas.stats import json_safe
from wit_builder.core.options import flag_name
from wit_builder.download.options import FetchConfig, ImageConfig

PLAN_JSON = "plan.json"  # in the --out folder: the plan_document of the run that made its shards
# Settings that change only how fast or how politely shards are made, not what they hold.
SPEED_ONLY_SETTINGS: tuple[str, ...] = ("threads", "per_host_concurrency", "per_host_rate")
SHOWN_DIFFERENCES = 8  # settings named in a refused rerun's message before "and N more"
NOT_RECORDED = "(not recorded)"


@dataclass(frozen=True)
class ShardSpec:
    """One url shard: ``members`` are (index into ``paths``, row number in that file), in download order.

    ``chain`` is the shard id of the first shard of its host chain (see ``wit_builder.download.host_shards``): the
    shards of one chain are downloaded one after another by one worker, so a host sees one shard at a time.
    """

    shard_id: int
    chain: int
    paths: tuple[str, ...]
    members: tuple[tuple[int, int], ...]

    @property
    def rows(self) -> int:
        """The shard's input rows (= rows of its raw parquet)."""
        return len(self.members)


def shard_specs(paths: Sequence[str], file_offsets: Sequence[int],
                planned: Iterable[tuple[int, Sequence[int]]]) -> list[ShardSpec]:
    """The planner's shards as ShardSpecs, numbered 0.. in order.

    ``file_offsets[i]``: the global row number of ``paths[i]``'s first row (files in order, rows counted across
    them); ``planned``: (chain, global row numbers) per shard, from ``HostPlanner.shards``. ValueError when the
    offsets do not match the paths or a row lies before the first file.
    """
    if len(file_offsets) != len(paths) or list(file_offsets) != sorted(file_offsets):
        raise ValueError(f"file offsets {list(file_offsets)[:5]} do not match {len(paths)} input files")
    starts = np.asarray(file_offsets, dtype=np.int64)
    specs = []
    for shard_id, (chain, shard_rows) in enumerate(planned):
        rows = np.asarray(shard_rows, dtype=np.int64)
        files = np.searchsorted(starts, rows, side="right") - 1
        if len(rows) and (files < 0).any():
            raise ValueError(f"shard {shard_id}: row {int(rows.min())} lies before the first input file")
        members = tuple(zip(files.tolist(), (rows - starts[files]).tolist(), strict=True))
        specs.append(ShardSpec(shard_id, chain, tuple(paths), members))
    return specs


def row_group_selection(group_sizes: Sequence[int], targets: Sequence[int]) -> tuple[list[int], list[int]]:
    """The row groups holding ``targets`` (sorted, distinct row numbers of one file) and each target's position
    in the table of just those groups read in order: (groups, positions).

    ``group_sizes``: rows per row group (the parquet footer). ValueError for a target past the file's end.
    """
    bounds = np.asarray(targets, dtype=np.int64)
    total = int(sum(group_sizes))
    if len(bounds) and (bounds[-1] >= total or bounds[0] < 0):
        raise ValueError(f"row {int(bounds[-1])} is outside a file of {total} rows")
    groups, firsts, offset = [], [], 0
    for g, n in enumerate(group_sizes):
        lo, hi = np.searchsorted(bounds, [offset, offset + n])
        if hi > lo:
            groups.append(g)
            firsts.append(offset)
        offset += n
    starts_in_file = np.asarray(firsts, dtype=np.int64)
    sizes = np.asarray([group_sizes[g] for g in groups], dtype=np.int64)
    starts_in_table = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    which = np.searchsorted(starts_in_file, bounds, side="right") - 1
    positions = (starts_in_table[which] + bounds - starts_in_file[which]).tolist() if len(bounds) else []
    return groups, positions


def output_settings(engine: str, image: ImageConfig, network: FetchConfig) -> dict[str, Any]:
    """The settings that decide what a raw shard holds, as JSON (plan.json's ``settings``; a rerun must match):
    the engine, the image and network settings without the speed-only ones (SPEED_ONLY_SETTINGS), tuples as
    lists and non-finite floats as strings (as read back from JSON).

    plan.json names them as the engines read them: the memory budget in bytes (``memory_budget_bytes``), the
    socket timeouts ``--timeout`` sets (``connect_timeout_s``, ``read_timeout_s``) and not the flag itself.
    """
    image_settings = dataclasses.asdict(image)
    del image_settings["memory_budget_mib"]
    image_settings["memory_budget_bytes"] = image.memory_budget_bytes
    network_settings = dataclasses.asdict(network)
    del network_settings["timeout_s"]
    settings: dict[str, Any] = {"engine": engine, "image": image_settings, "network": network_settings}
    for group in ("image", "network"):
        for name in SPEED_ONLY_SETTINGS:
            settings[group].pop(name, None)
    result: dict[str, Any] = json.loads(json.dumps(json_safe(settings), default=str, allow_nan=False))
    return result


def plan_document(paths: Sequence[str], rows_per_shard: int, specs: Sequence[ShardSpec],
                  settings: Mapping[str, Any]) -> dict[str, Any]:
    """plan.json: the input files in order, the shard cut (rows per shard, shard and row counts) and the
    output settings (:func:`output_settings`); two runs may share a folder only with equal documents."""
    return {"inputs": list(paths), "rows_per_shard": rows_per_shard, "shards": len(specs),
            "rows": sum(s.rows for s in specs), "settings": dict(settings)}


def plan_differences(previous: Mapping[str, Any], plan: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``name: was X, now Y`` for every leaf that differs (nested keys joined with dots, sorted); a key only one
    side has shows ``(not recorded)`` on the other."""
    differences = []
    for key in sorted(set(previous) | set(plan), key=str):
        name = f"{prefix}{key}"
        old, new = previous.get(key, NOT_RECORDED), plan.get(key, NOT_RECORDED)
        if isinstance(old, dict) != isinstance(new, dict) and NOT_RECORDED in (old, new):
            old, new = (old if isinstance(old, dict) else {}), (new if isinstance(new, dict) else {})
        if isinstance(old, dict) and isinstance(new, dict):
            differences += plan_differences(old, new, f"{name}.")
        elif old != new:
            differences.append(f"{name}: was {old!r}, now {new!r}")
    return differences


def plan_conflict(out: str, previous: Mapping[str, Any], plan: Mapping[str, Any]) -> str | None:
    """The message refusing a rerun into ``out`` whose plan.json (``previous``) differs from this run's ``plan``
    (naming the first SHOWN_DIFFERENCES differences and what to do), or None when they are equal."""
    if previous == plan:
        return None
    differences = [flag_of_difference(line) for line in plan_differences(previous, plan)]
    shown = "; ".join(differences[:SHOWN_DIFFERENCES])
    if len(differences) > SHOWN_DIFFERENCES:
        shown += f"; and {len(differences) - SHOWN_DIFFERENCES} more"
    return (f"{out} holds raw shards made with other inputs or settings ({shown}); rerun with the same ones to "
            "resume, use a fresh --out, or pass --overwrite to delete those shards and download again")


# plan.json's names that are no flag's field: what the user set them with
_PLAN_FLAGS = {"inputs": "--pairs (its files)", "rows": "--pairs (its rows)", "shards": "--pairs/--rows-per-shard "
               "(shards)", "rows_per_shard": "--rows-per-shard", "settings.engine": "--engine",
               "settings.image.memory_budget_bytes": "--image-memory-budget (in bytes)",
               "settings.network.connect_timeout_s": "--timeout (connect)",
               "settings.network.read_timeout_s": "--timeout (read)"}


def flag_of_difference(line: str) -> str:
    """A :func:`plan_differences` line (``settings.image.image_size: was 256, now 128``) with plan.json's name
    replaced by the flag that sets it (``--image-size: was 256, now 128``): a refused rerun names what the
    user typed, not an internal field. Names without a flag stay as they are."""
    name, sep, rest = line.partition(": ")
    if name in _PLAN_FLAGS:
        return f"{_PLAN_FLAGS[name]}{sep}{rest}"
    groups = {"settings.image.": ImageConfig, "settings.network.": FetchConfig}
    for prefix, config in groups.items():
        if name.startswith(prefix):
            for field in dataclasses.fields(config):
                if field.name == name[len(prefix):] and field.metadata.get("cli", True):
                    return f"{flag_name(field)}{sep}{rest}"
    return line
