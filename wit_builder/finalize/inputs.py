"""Stage 4's settings and input rules as pure functions (``pipeline.py`` does the file system calls).

- :func:`check_settings`: the user settings' ranges, shared by the options and the resolved config;
- :func:`raw_patterns`, :func:`eval_images`: what ``--raw`` and ``--decontaminate`` name;
- :func:`check_out_apart_from_raw`: ``--out`` never a folder of raw shards;
- :func:`rebalance_seed`: the re-balance seed is stage 2's balance seed (the seed check between
  stages 2 and 4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from wit_builder.core import dedup

EVAL_IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
PAIRS_STAGE = "build-pairs"  # schemas/stats.py's stage name of stage 2's stats.json


def check_settings(samples_per_shard: int, per_query_cap: int | None, phash_distance: int) -> None:
    """Raise ValueError naming the flag for ``--samples-per-shard`` < 1, ``--per-query-cap`` < 1 or a
    ``--phash-distance`` outside ``wit_builder.core.dedup.bands``' range (0..63 bits)."""
    if samples_per_shard < 1:
        raise ValueError(f"--samples-per-shard must be >= 1, got {samples_per_shard}")
    if per_query_cap is not None and per_query_cap < 1:
        raise ValueError(f"--per-query-cap must be >= 1, got {per_query_cap}")
    dedup.bands(phash_distance)  # validates the range


def raw_patterns(patterns: Iterable[str], join: Callable[[str, str], str]) -> list[str]:
    """``--raw``'s folders, files and globs as file globs: a folder (no ``.parquet`` suffix, no ``*?[``) means
    its ``*.parquet``. ``join`` joins a folder and a name (local paths and object-store URLs alike)."""
    expanded = []
    for pattern in patterns:
        is_file_or_glob = pattern.endswith(".parquet") or any(c in pattern for c in "*?[")
        expanded.append(pattern if is_file_or_glob else join(pattern, "*.parquet"))
    return expanded


def raw_parquet_files(matched: Iterable[str], patterns: Iterable[str]) -> list[str]:
    """The ``.parquet`` files among ``matched`` (a glob may also match tars and stats), in the given order;
    FileNotFoundError naming the patterns when there are none."""
    files = [f for f in matched if f.endswith(".parquet")]
    if not files:
        raise FileNotFoundError(f"--raw {' '.join(patterns)}: no .parquet files")
    return files


def eval_images(paths: Iterable[str]) -> list[str]:
    """The image files (by extension, case-insensitive: EVAL_IMAGE_EXTENSIONS) among ``paths``, sorted."""
    return sorted(p for p in paths if p.lower().endswith(EVAL_IMAGE_EXTENSIONS))


def folder_of(path: str) -> str:
    """The folder part of a path or URL (``.`` for a bare file name)."""
    return path.rsplit("/", 1)[0] if "/" in path else "."


def check_out_apart_from_raw(out: str, files: Iterable[str], folder_key: Callable[[str], str]) -> None:
    """ValueError when ``--out`` is the folder of one of the raw parquets ``files``: final shards share their
    NNNNN.tar/.parquet names, and a rerun deletes stats.json and "stale" shards there, so the raw input would
    be overwritten or deleted. ``folder_key`` makes two spellings of one folder equal (``os.path.realpath``
    for local paths)."""
    out_key = folder_key(out)
    for f in files:
        if folder_key(folder_of(f)) == out_key:
            raise ValueError(f"--out {out} is the folder of the raw shard {f}: finalize would overwrite or delete "
                             "the raw shards there; choose another --out")


def rebalance_seed(seed: int | None, per_query_cap: int | None, pairs_stats: Mapping[str, Mapping[str, Any]]) -> int:
    """The seed of the re-balance hash rank, checked between stages 2 and 4: it must be stage 2's balance seed.

    Stage 2 keeps, per query over its target, the samples with the smallest seeded ranks
    (``wit_builder.core.balance``); stage 4's re-cap (``--per-query-cap``) ranks the survivors with the same function,
    so with the same seed each query's final set is the smallest ranks of what stage 2 kept, and the trainer's
    load-time balance (``trainer/balance.py``) gives the same samples. A different seed caps with unrelated ranks.

    ``seed``: the user's ``--seed``, or None (the default) for "stage 2's": the one traced seed, else 0.
    ``pairs_stats``: stats.json path -> its document, for every stage 2 output traced behind the raw shards
    (download's plan.json names the pairs files; their folder holds stage 2's stats.json). Documents of other
    stages and runs without a cap (stage 2's ``per_query_cap`` None) are ignored, and nothing is checked
    without ``per_query_cap`` here. Raises ValueError naming the stats file and both seeds when a traced seed
    differs from a given ``seed``, or naming two files when the traced runs used different seeds.
    """
    seeds: dict[int, str] = {}
    for path, doc in sorted(pairs_stats.items()):
        parameters = doc.get("parameters", {}) if doc.get("stage") == PAIRS_STAGE else {}
        if parameters.get("per_query_cap") is None or not isinstance(parameters.get("seed"), int):
            continue
        seeds.setdefault(parameters["seed"], path)
    if per_query_cap is None:
        return 0 if seed is None else seed  # no re-cap: the seed ranks nothing
    if len(seeds) > 1:
        (a, path_a), (b, path_b) = sorted(seeds.items())[:2]
        raise ValueError(f"--raw: the pairs behind the raw shards were balanced with different seeds ({a} in {path_a}, "
                         f"{b} in {path_b}); re-balance them separately, one --seed each")
    if seed is None:
        return next(iter(seeds), 0)
    for traced, path in seeds.items():
        if traced != seed:
            raise ValueError(f"--seed {seed} differs from the seed {traced} that stage 2 balanced the pairs with "
                             f"({path}): pass --seed {traced} or leave --seed out, so that the re-cap ranks "
                             "samples as stage 2 did")
    return seed
