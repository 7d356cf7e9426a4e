"""Stage 4's statistics as pure functions: the counts each row adds, the counts -> the stats, the accounting
checks, stats.json's declared layout (``schemas/stats.py``), the summary line and the warnings.

Counts are data (``wit_builder.beam.counting``): ``pipeline.py``'s DoFns count, for every record, the names
:func:`input_counts`, :func:`candidate_counts` and :func:`final_counts` give; the frame sums them into
``OUT/_counts.json`` and the command hands them to :func:`summarize`, so the statistics come from the data
itself, never from Beam metrics (a retried bundle cannot change them). Per-query and per-shard numbers are
tables, not counts: they travel as ``accounting/query_counts.parquet`` (rows from :func:`query_row`) and the
written shard sizes (``wit_builder.finalize.outputs``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from schemas import stats as stats_schema
from schemas.finalize import FINAL_STATUSES, RawRecord
from wit_builder.finalize import dataset_card
from wit_builder.finalize import shards as final_shards
from wit_builder.finalize.rules import AccountingError

if TYPE_CHECKING:  # types only: the settings document names them
    from wit_builder.finalize.inputs import Inputs
    from wit_builder.finalize.options import FinalizeOptions

# Counts reported as 0 when no record reached them (the others appear only when seen, as in stats.json).
COUNT_NAMES: tuple[str, ...] = ("rows", "uids", "queries_over_cap", *(f"status_{s}" for s in FINAL_STATUSES))
QueryCount = tuple[str, int, int]  # (query, successes entering finalize, samples in the final shards)


def input_counts(record: RawRecord) -> list[str]:
    """The counts a raw row adds as read: ``rows`` and ``raw_status_<its raw status>``."""
    return ["rows", f"raw_status_{record.raw_status}"]


def candidate_counts(record: RawRecord) -> list[str]:
    """The counts a success entering dedup adds: ``hash_source_<where its sha256/pHash came from>``."""
    return [f"hash_source_{record.hash_source}"]


def final_counts(record: RawRecord) -> list[str]:
    """The counts a row with its final status adds: ``status_<status>``, ``reason_<reason>`` (``success`` for a
    survivor) and, for a survivor, the bins of its original size (``size_width_<bin>``, ``size_height_<bin>``:
    ``wit_builder.finalize.dataset_card.size_bin``); for a row with stage 2's caption language, also
    ``lang.<lang>.<status>``."""
    language = [f"{LANGUAGE_PREFIX}{record.lang}.{record.status}"] if record.lang else []
    if record.status != "success":
        return [f"status_{record.status}", f"reason_{record.reason}", *language]
    return ["status_success", "reason_success", f"size_width_{dataset_card.size_bin(record.original_width)}",
            f"size_height_{dataset_card.size_bin(record.original_height)}", *language]


LANGUAGE_PREFIX = "lang."


def languages(counts: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """Rows per caption language and final status, from the ``lang.<lang>.<status>`` counts."""
    out: dict[str, dict[str, int]] = {}
    for name, n in stats_schema.prefixed(counts, LANGUAGE_PREFIX).items():
        lang, _, status = name.rpartition(".")
        out.setdefault(lang, {})[status] = int(n)
    return dict(sorted(out.items()))


def query_row(joined: tuple[str, Mapping[str, Iterable[int]]]) -> QueryCount:
    """One query's counts joined by query (``{"input": [n], "final": [m]}``, either list possibly empty) ->
    (query, successes entering finalize, samples in the final shards)."""
    query, counts = joined
    return query, sum(counts.get("input", ())), sum(counts.get("final", ()))


def summarize(counts: Mapping[str, int], sizes: Mapping[str, int], *, raw_names: Sequence[str], expected_rows: int,
              samples_per_shard: int) -> tuple[dict[str, Any], dict[str, int]]:
    """The run's counts and the written shard sizes (shard name -> samples) -> (stats, sizes sorted by name).

    ``stats`` holds ``input``, ``raw_statuses``, ``statuses`` (every FINAL_STATUSES key), ``reasons``,
    ``hash_sources``, ``dedup``, ``rebalance``, ``output`` and ``image_sizes``. Raises AccountingError when the
    rows read or given a final status differ from ``expected_rows`` (the raw parquets' footers), when the
    shards do not hold every success, or when their sizes are not the equal-count plan
    (``wit_builder.finalize.shards.shard_sizes``).
    """
    statuses = {s: counts.get(f"status_{s}", 0) for s in FINAL_STATUSES}
    input_rows = counts.get("rows", 0)
    sizes_map = dict(sorted(sizes.items()))
    problems = []
    if sum(statuses.values()) != expected_rows or input_rows != expected_rows:
        problems.append(f"{expected_rows} rows in the raw parquets, {input_rows} read, "
                        f"{sum(statuses.values())} with a final status")
    if sum(sizes_map.values()) != statuses["success"]:
        problems.append(f"{statuses['success']} successes but {sum(sizes_map.values())} samples in shards")
    expected_sizes = final_shards.shard_sizes(statuses["success"], samples_per_shard)
    if sizes_map != expected_sizes:
        problems.append(f"shard sizes {sizes_map} differ from the plan {expected_sizes}")
    if problems:
        raise AccountingError("finalize accounting failed: " + "; ".join(problems))

    def family(prefix: str) -> dict[str, int]:
        return dict(sorted(stats_schema.prefixed(counts, prefix).items()))

    reasons, hash_sources = family("reason_"), family("hash_source_")
    stats: dict[str, Any] = {
        "input": {"raw_shards": len(raw_names), "rows": input_rows, "uids": counts.get("uids", 0),
                  "files": list(raw_names)},
        "raw_statuses": family("raw_status_"),
        "statuses": statuses,
        "reasons": reasons,
        "hash_sources": hash_sources,
        "dedup": {
            "candidates": sum(hash_sources.values()),
            "repeated_uids": reasons.get("repeated_uid", 0),
            "exact_duplicates": reasons.get("exact_duplicate", 0),
            "near_duplicates": reasons.get("near_duplicate", 0),
            "decontaminated": reasons.get("decontaminated", 0),
            "eval_images_hashed": counts.get("eval_images_hashed", 0),
            "eval_images_unreadable": counts.get("eval_images_unreadable", 0),
        },
        "rebalance": {"over_cap": reasons.get("over_cap", 0), "queries_over_cap": counts.get("queries_over_cap", 0)},
        "output": {"samples": statuses["success"], "shards": len(sizes_map), "samples_per_shard": samples_per_shard},
        "image_sizes": {side: family(f"size_{side}_") for side in ("width", "height")},
        "languages": languages(counts),
    }
    return stats, sizes_map


def parameters(options: FinalizeOptions, inputs: Inputs) -> dict[str, Any]:
    """stats.json's ``parameters`` and the card's settings: the options with the resolved seed and the number of
    evaluation images (no output path: the same inputs give the same bytes wherever they are written)."""
    return {
        "raw": " ".join(options.raw), "samples_per_shard": options.samples_per_shard,
        "per_query_cap": options.per_query_cap, "phash_distance": options.phash_distance, "seed": inputs.seed,
        "decontaminate": options.decontaminate, "eval_images": len(inputs.eval_files),
        "match_rule": inputs.match_rule, "language_caps": dict(inputs.language_caps),
    }


def stats_document(stats: Mapping[str, Any], *, raw_files: Sequence[str], settings: Mapping[str, Any],
                   sizes: Mapping[str, int], seconds: float, match_rule: str | None) -> dict[str, Any]:
    """stats.json in the declared layout (``schemas/stats.py``) from :func:`summarize`'s stats: every status,
    drop reason, raw status and hash source as a flat ``counts`` entry (``status_success``, ``reason_over_cap``,
    ...), one input per raw parquet, one output per final tar; ``seconds`` is the run's wall time."""
    counts = {"rows": stats["input"]["rows"], "uids": stats["input"]["uids"], "raw_shards": len(raw_files),
              "samples": stats["output"]["samples"], "shards": stats["output"]["shards"],
              "dedup_candidates": stats["dedup"]["candidates"],
              "eval_images_hashed": stats["dedup"]["eval_images_hashed"],
              "eval_images_unreadable": stats["dedup"]["eval_images_unreadable"],
              "queries_over_cap": stats["rebalance"]["queries_over_cap"],
              **{f"status_{k}": v for k, v in stats["statuses"].items()},
              **{f"reason_{k}": v for k, v in stats["reasons"].items()},
              **{f"raw_status_{k}": v for k, v in stats["raw_statuses"].items()},
              **{f"hash_source_{k}": v for k, v in stats["hash_sources"].items()}}
    return stats_schema.envelope(
        "finalize",
        inputs=[stats_schema.input_entry(path) for path in raw_files],
        parameters=dict(settings),
        counts=counts,
        outputs=[stats_schema.output_entry(f"{name}.tar", n) for name, n in sizes.items()],
        seconds=seconds,
        details={**{k: stats[k] for k in ("input", "dedup", "rebalance", "output", "image_sizes", "languages")},
                 "match_rule": match_rule},
    )


def summary(counts: Mapping[str, int], seconds: float) -> list[str]:
    """The parts of the summary line from stats.json's ``counts``: rows -> samples in shards (the statuses seen,
    by name), and rows per second over ``seconds``."""
    shown = ", ".join(f"{s} {n}" for s, n in sorted(stats_schema.prefixed(counts, "status_").items()) if n)
    return [f"{counts['rows']:,} rows -> {counts['samples']:,} samples in {counts['shards']} shards ({shown})",
            f"{counts['rows'] / max(seconds, 1e-9):.0f} rows/s"]


def run_warnings(counts: Mapping[str, int], counted: Mapping[str, int], rows_dir: str) -> list[str]:
    """What the run should say beside its summary: monitoring counters that differ from the counts
    (:func:`counter_mismatches`), evaluation images of ``--decontaminate`` that were skipped, and stored images
    that could not be read back from the raw tars (damaged download output: said, not only counted; their rows
    are in ``rows_dir``)."""
    lines = []
    if mismatched := counter_mismatches(counts, counted):
        lines.append(f"monitoring counters differ from the counts in stats.json (count, counter): {mismatched}")
    if skipped := counts.get("eval_images_unreadable", 0):
        lines.append(f"--decontaminate: {skipped:,} evaluation image(s) could not be read or decoded and were skipped "
                     "(named in the log above); samples were not checked against them")
    if unreadable := counts.get("reason_raw_image_unreadable", 0):
        lines.append(f"{unreadable:,} stored image(s) could not be read back from their raw tars (missing, truncated "
                     f"or undecodable); they are failed_to_decode, each naming its tar and key, in {rows_dir}; rerun "
                     "the download of those shards if that is unexpected")
    return lines


def counter_mismatches(counts: Mapping[str, int], counted: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """The counts whose monitoring counter of the same name (``counted``; none counts 0) differs: name ->
    (count, counter). Attempted-only metrics may count a retried bundle twice, so a difference is a warning,
    never an error."""
    return {name: (n, counted.get(name, 0)) for name, n in counts.items() if counted.get(name, 0) != n}
