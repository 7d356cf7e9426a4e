"""Stage 4's inputs: what the flags name, resolved and checked before any work.

- :func:`resolve`: the options -> :class:`Inputs` (the raw parquets and the rows in their footers, the
  evaluation images, the re-balance seed, the match rule); FileNotFoundError or ValueError naming the flag and
  the file (the launcher's exit 2);
- :func:`raw_patterns`, :func:`raw_parquet_files`, :func:`eval_images`: what ``--raw`` and ``--decontaminate``
  name;
- :func:`check_out_apart_from_raw`: ``--out`` never a folder of raw shards;
- :func:`rebalance_seed`: the re-balance seed is stage 2's balance seed (the seed check between stages 2 and 4).

The rules are pure functions; :func:`resolve` reads the files through ``wit_builder.beam.fileio`` (any
filesystem) and ``wit_builder.finalize.trace`` (what lies behind the raw shards).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.pairs import QUERY_COUNTS_PARQUET as PAIRS_QUERY_COUNTS
from wit_builder.beam import fileio
from wit_builder.core.balance import language_caps
from wit_builder.download import raw_shards
from wit_builder.finalize.options import FinalizeOptions
from wit_builder.finalize.trace import folder_of, pairs_stats_behind, raw_match_rule

EVAL_IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
PAIRS_STAGE = "build-pairs"  # schemas/stats.py's stage name of stage 2's stats.json


@dataclass(frozen=True)
class Inputs:
    """What the flags name, resolved by :func:`resolve` (the settings themselves stay in the options)."""

    raw_names: tuple[tuple[str, str], ...]  # (parquet path, raw shard name), one per raw parquet, sorted by path
    rows: int                               # rows in all raw parquets, from their footers
    eval_files: tuple[str, ...] = ()        # the evaluation images below --decontaminate, sorted
    seed: int = 0                           # the re-balance seed (rebalance_seed)
    match_rule: str | None = None           # the rule the pairs were matched under (trace.raw_match_rule)
    language_caps: tuple[tuple[str, int], ...] = ()  # (language, re-cap) of each language (language_recaps)

    @property
    def raw_files(self) -> tuple[str, ...]:
        """The raw parquets, sorted."""
        return tuple(path for path, _ in self.raw_names)


def resolve(options: FinalizeOptions) -> Inputs:
    """Resolve and check what the flags name: the raw parquets (footers read), ``--out`` apart from them, the
    evaluation images, the match rule and the seed of the pairs behind them.

    Raises FileNotFoundError or ValueError (``raw_shards.RawInputError`` among them) naming the flag and the
    file: ``--raw`` matching no parquet or holding no rows, ``--out`` a raw folder, ``--decontaminate`` without
    images, pairs of two match rules or seeds, a ``--seed`` other than stage 2's.
    """
    files = raw_parquets(options.raw)
    check_out_apart_from_raw(options.out, files, _folder_key)
    names = raw_shards.raw_shard_names(files)
    rows = sum(parquet_rows(f) for f in files)
    if rows == 0:
        raise raw_shards.RawInputError(f"--raw {' '.join(options.raw)}: the raw parquets hold no rows")
    evals = tuple(eval_images_below(options.decontaminate)) if options.decontaminate else ()
    pairs_stats = pairs_stats_behind(files)
    seed = rebalance_seed(options.seed, options.per_query_cap, pairs_stats)
    caps = language_recaps(options.per_query_cap, pairs_stats) if options.per_query_cap else {}
    match_rule = raw_match_rule(files)  # ValueError when the pairs behind the shards mix match rules
    if options.decontaminate and not evals:
        raise ValueError(f"--decontaminate {options.decontaminate}: no image files found there")
    return Inputs(raw_names=tuple(sorted(names.items())), rows=rows, eval_files=evals, seed=seed,
                  match_rule=match_rule, language_caps=tuple(sorted(caps.items())))


def language_recaps(per_query_cap: int, pairs_stats: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Each language's re-cap: stage 2's per-language rule (``core.balance.language_caps``, MetaCLIP 2's
    ``p_to_t`` from English's cap) with English at ``--per-query-cap``, over the matched counts of stage 2's
    ``query_counts.parquet`` beside each traced stats.json (summed per (language, query) over the runs). With
    the cap stage 2 used, these are stage 2's own caps. Languages of no traced run are capped at
    ``per_query_cap`` (``wit_builder.finalize.rules.language_cap``); runs without languages give {}."""
    counts: dict[str, dict[str, int]] = {}
    rule = "same"
    for path, doc in sorted(pairs_stats.items()):
        parameters = doc.get("parameters", {}) if doc.get("stage") == PAIRS_STAGE else {}
        if not parameters.get("language_caps"):
            continue
        rule = parameters["language_caps"]
        table = fileio.read_parquet(fileio.join(folder_of(path), PAIRS_QUERY_COUNTS))
        if "lang" not in table.column_names:
            continue
        kept = parameters.get("languages")  # stage 2's kept languages: a filtered one has no cap (pairs/stats.py)
        for lang, query, matched in zip(table.column("lang").to_pylist(), table.column("query").to_pylist(),
                                        table.column("matched").to_pylist(), strict=True):
            if kept is not None and lang not in kept:
                continue
            mine = counts.setdefault(lang, {})
            mine[query] = mine.get(query, 0) + matched
    return language_caps({lang: np.array(list(c.values()), np.int64) for lang, c in counts.items()},
                         per_query_cap, rule)


def raw_parquets(patterns: Iterable[str]) -> list[str]:
    """The raw parquets named by folders, files or globs (:func:`raw_patterns`), sorted; FileNotFoundError
    naming the pattern that matches nothing, or all of them when no parquet is among them."""
    patterns = list(patterns)
    return raw_parquet_files(fileio.expand_patterns(raw_patterns(patterns, fileio.join), "--raw"), patterns)


def eval_images_below(folder: str) -> list[str]:
    """The evaluation images anywhere below ``folder`` (:func:`eval_images`), sorted."""
    return eval_images(fileio.match(fileio.join(folder, "**")))


def parquet_rows(path: str) -> int:
    """Rows in a raw parquet, from its footer (only the footer is read); RawInputError naming the file when it
    is no raw shard."""
    with fileio.open_read(path) as f:
        try:
            footer = pq.ParquetFile(f).metadata
        except (pa.ArrowInvalid, OSError) as exc:
            raise raw_shards.RawInputError(f"{path}: not a readable parquet file ({exc})") from exc
    raw_shards.check_columns(footer.schema.to_arrow_schema().names, path)
    return int(footer.num_rows)


def _folder_key(path: str) -> str:
    return path.rstrip("/") if "://" in path else os.path.realpath(path)


# ---- the rules ----

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
