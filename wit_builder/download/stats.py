"""Stage 3's counts and ``stats.json``, computed from the counts as data.

Every shard of the plan, downloaded by this run or complete from an earlier one, reaches the counting step
once as a :class:`ShardOutcome`; :func:`shard_counts` is what it adds to the run's counts (the frame,
``pipeline._CountShardFn``, counts it) and its ``top_errors`` are summed into the run's error kinds. Then

- :func:`stats_document`: stats.json (schemas/stats.py) from those counts and error kinds;
- :func:`summary`, :func:`nothing_succeeded`, :func:`nothing_succeeded_report`: the summary line, and the
  top reasons with hints when no row succeeded (exit 3).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas import stats as stats_schema
from schemas.download import RAW_STATUSES
from wit_builder.download import raw_shards
from wit_builder.download.options import DownloadOptions, parameters
from wit_builder.download.plan import ShardSpec

STATUS_PREFIX = "status_"
BLOCKED_PREFIX = "blocked_"
# stats.json's counts: shards and rows of the whole folder, rows per raw status, blocked rows per reason
FOLDER_COUNTS: tuple[str, ...] = ("shards", "rows", "bytes_downloaded",
                                  *(f"{STATUS_PREFIX}{s}" for s in RAW_STATUSES),
                                  *(f"{BLOCKED_PREFIX}{r}" for r in raw_shards.BLOCK_REASONS))
# this run's work, for the summary line only (a rerun that downloads nothing leaves stats.json as it was)
RUN_COUNTS: tuple[str, ...] = ("shards_downloaded", "rows_downloaded", "rows_retried", "rows_recovered")
COUNT_NAMES = FOLDER_COUNTS + RUN_COUNTS
SHOWN_REASONS = 5  # error kinds listed when nothing succeeded


@dataclass(frozen=True)
class ShardOutcome:
    """One shard of the plan after the download step: its ``{shard}_stats.json`` document
    (``raw_shards.shard_stats``) and whether this run made it (False: complete from an earlier run); for a
    shard rewritten by ``--retry-failed``, the rows fetched again and how many of them succeeded now."""

    stats: dict[str, Any]
    downloaded: bool
    retried: int | None = None
    recovered: int = 0


def shard_counts(outcome: ShardOutcome) -> dict[str, int]:
    """What one shard adds to the run's counts (COUNT_NAMES): one shard, its rows, bytes, rows per status and
    blocked rows per reason (a shard made before reasons were counted: all ``other``); its shard and rows again
    under RUN_COUNTS when this run downloaded it. KeyError naming the field its stats lack."""
    stats = outcome.stats
    reasons = stats.get("blocked_reasons", {"other": stats["statuses"].get("blocked", 0)})
    counts = {"shards": 1, "rows": stats["count"], "bytes_downloaded": stats["bytes_downloaded"],
              **{f"{STATUS_PREFIX}{status}": n for status, n in stats["statuses"].items()},
              **{f"{BLOCKED_PREFIX}{reason}": reasons.get(reason, 0) for reason in raw_shards.BLOCK_REASONS}}
    if outcome.retried is not None:
        counts.update(shards_downloaded=1, rows_downloaded=outcome.retried, rows_retried=outcome.retried,
                      rows_recovered=outcome.recovered)
    elif outcome.downloaded:
        counts.update(shards_downloaded=1, rows_downloaded=stats["count"], rows_retried=0, rows_recovered=0)
    return counts


def statuses(counts: Mapping[str, int]) -> dict[str, int]:
    """Rows per raw status, in RAW_STATUSES order."""
    return {status: counts.get(f"{STATUS_PREFIX}{status}", 0) for status in RAW_STATUSES}


def blocked_reasons(counts: Mapping[str, int]) -> dict[str, int]:
    """Blocked rows per reason, in ``raw_shards.BLOCK_REASONS`` order."""
    return {reason: counts.get(f"{BLOCKED_PREFIX}{reason}", 0) for reason in raw_shards.BLOCK_REASONS}


def top_errors(error_kinds: Mapping[str, int]) -> dict[str, int]:
    """The most frequent error kinds of the run (``raw_shards.TOP_ERRORS``, ties by text), from the sum of the
    shards' own ``top_errors``."""
    return raw_shards.merge_top_errors([dict(error_kinds)])


def rows_per_input(specs: Iterable[ShardSpec]) -> dict[str, int]:
    """Input file -> rows planned from it, in first-seen order (stats.json's ``inputs``)."""
    rows: dict[str, int] = {}
    for spec in specs:
        for index, _ in spec.members:
            rows[spec.paths[index]] = rows.get(spec.paths[index], 0) + 1
    return rows


def stats_document(options: DownloadOptions, specs: Sequence[ShardSpec], counts: Mapping[str, int],
                   errors: Mapping[str, int], seconds: float) -> dict[str, Any]:
    """stats.json in the declared layout (schemas/stats.py): the planned inputs and raw parquets, the flags
    (:func:`~wit_builder.download.options.parameters`), the folder's counts (RUN_COUNTS left out), and in
    ``details`` the rows per status and the top error kinds (``errors``: :func:`top_errors`)."""
    return stats_schema.envelope(
        "download",
        inputs=[stats_schema.input_entry(path, rows=n) for path, n in rows_per_input(specs).items()],
        parameters=parameters(options),
        counts={name: n for name, n in counts.items() if name not in RUN_COUNTS},
        outputs=[stats_schema.output_entry(raw_shards.shard_files(s.shard_id)[1], s.rows) for s in specs],
        seconds=seconds,
        details={"statuses": statuses(counts), "blocked_reasons": blocked_reasons(counts), "top_errors": dict(errors)},
    )


def summary(counts: Mapping[str, int], shards: int) -> list[str]:
    """The summary line's parts: the folder's rows per status, and what this run downloaded."""
    shown = " ".join(f"{status}={n}" for status, n in statuses(counts).items())
    blocked = " ".join(f"{reason}={n}" for reason, n in blocked_reasons(counts).items() if n)
    parts = [f"{counts['rows']:,} rows in {shards} shards: {shown}" + (f" (blocked: {blocked})" if blocked else ""),
             f"this run downloaded {counts['rows_downloaded']:,} rows in {counts['shards_downloaded']} shards"]
    if counts.get("rows_retried"):
        parts.append(f"retried {counts['rows_retried']:,} failed rows, {counts.get('rows_recovered', 0):,} "
                     "succeeded now")
    return parts


def nothing_succeeded(counts: Mapping[str, int]) -> bool:
    """Whether the folder has rows but not one success (the command's exit 3)."""
    return bool(counts["rows"]) and not counts.get(f"{STATUS_PREFIX}success")


def nothing_succeeded_report(counts: Mapping[str, int], errors: Mapping[str, int],
                             shown: int = SHOWN_REASONS) -> str:
    """What to say when no row succeeded: the ``shown`` most frequent error kinds (``errors``: :func:`top_errors`)
    and what to try (``raw_shards.failure_hints``)."""
    lines = [f"nothing succeeded: all {counts['rows']} rows were refused or failed. Top reasons:"]
    lines += [f"  {n:>8}  {kind}" for kind, n in list(errors.items())[:shown]]
    lines += [f"hint: {hint}" for hint in raw_shards.failure_hints(statuses(counts), dict(errors))]
    return "\n".join(lines)
