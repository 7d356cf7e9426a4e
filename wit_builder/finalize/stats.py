"""Stage 4's statistics as pure functions: facts per row, their counts -> the stats, the accounting checks and
stats.json's declared layout (``schemas/stats.py``).

The pipeline turns every record into a few ``(category, name)`` facts (:func:`input_facts`,
:func:`candidate_facts`, :func:`final_facts`), counts them with a combiner and hands the counts to
:func:`summarize`, so the statistics come from the data itself, never from Beam metrics (a retried bundle
cannot change them).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from schemas import stats as stats_schema
from schemas.finalize import FINAL_STATUSES, RawRecord
from wit_builder.finalize import dataset_card
from wit_builder.finalize import shards as final_shards
from wit_builder.finalize.rules import AccountingError

Fact = tuple[str, str]  # (category, name): e.g. ("status", "success"), ("query_final", "space shuttle")
QueryCount = tuple[str, int, int]  # (query, successes entering finalize, samples in the final shards)


def input_facts(record: RawRecord) -> Iterator[Fact]:
    """Facts of every raw row as read: one ``input_rows`` and its raw status."""
    yield "input_rows", ""
    yield "raw_status", record.raw_status


def candidate_facts(record: RawRecord) -> Iterator[Fact]:
    """Facts of a success entering dedup: where its hashes came from and each of its queries."""
    yield "hash_source", record.hash_source
    for query in record.queries:
        yield "query_input", query


def final_facts(record: RawRecord) -> Iterator[Fact]:
    """Facts of a row with its final status: the status, the reason (``success`` for a survivor) and, for a
    survivor, its original size bins (``wit_builder.finalize.dataset_card.size_bin``) and each of its queries."""
    yield "status", record.status
    yield "reason", record.reason if record.status != "success" else "success"
    if record.status == "success":
        yield "size_width", dataset_card.size_bin(record.original_width)
        yield "size_height", dataset_card.size_bin(record.original_height)
        for query in record.queries:
            yield "query_final", query


def summarize(facts: Iterable[tuple[Fact, int]], sizes: Iterable[tuple[str, int]], *, uids: int,
              queries_over_cap: int, raw_names: Sequence[str], expected_rows: int,
              samples_per_shard: int) -> tuple[dict[str, Any], list[QueryCount], dict[str, int]]:
    """Fact counts and (final shard name, samples written) -> (stats, query counts sorted by query, sizes).

    ``stats`` holds ``input``, ``raw_statuses``, ``statuses`` (every FINAL_STATUSES key), ``reasons``,
    ``hash_sources``, ``dedup``, ``rebalance``, ``output`` and ``image_sizes``; ``sizes`` is shard name ->
    samples, sorted. Raises AccountingError when the rows read or given a final status differ from
    ``expected_rows`` (the raw parquets' footers), when the shards do not hold every success, or when their
    sizes are not the equal-count plan (``wit_builder.finalize.shards.shard_sizes``).
    """
    by: dict[str, dict[str, int]] = {}
    for (category, name), n in facts:
        by.setdefault(category, {})[name] = n
    statuses = {s: by.get("status", {}).get(s, 0) for s in FINAL_STATUSES}
    input_rows = by.get("input_rows", {}).get("", 0)
    sizes_map = dict(sorted(sizes))
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

    reasons = dict(sorted(by.get("reason", {}).items()))
    query_input, query_final = by.get("query_input", {}), by.get("query_final", {})
    query_rows = sorted((q, query_input.get(q, 0), query_final.get(q, 0)) for q in set(query_input) | set(query_final))
    stats: dict[str, Any] = {
        "input": {"raw_shards": len(raw_names), "rows": input_rows, "uids": uids, "files": list(raw_names)},
        "raw_statuses": dict(sorted(by.get("raw_status", {}).items())),
        "statuses": statuses,
        "reasons": reasons,
        "hash_sources": dict(sorted(by.get("hash_source", {}).items())),
        "dedup": {
            "candidates": sum(by.get("hash_source", {}).values()),
            "repeated_uids": reasons.get("repeated_uid", 0),
            "exact_duplicates": reasons.get("exact_duplicate", 0),
            "near_duplicates": reasons.get("near_duplicate", 0),
            "decontaminated": reasons.get("decontaminated", 0),
        },
        "rebalance": {"over_cap": reasons.get("over_cap", 0), "queries_over_cap": queries_over_cap},
        "output": {"samples": statuses["success"], "shards": len(sizes_map), "samples_per_shard": samples_per_shard},
        "image_sizes": {side: dict(sorted(by.get(f"size_{side}", {}).items())) for side in ("width", "height")},
    }
    return stats, query_rows, sizes_map


def stats_document(stats: Mapping[str, Any], *, raw_files: Sequence[str], settings: Mapping[str, Any],
                   sizes: Mapping[str, int], seconds: float, match_rule: str | None) -> dict[str, Any]:
    """stats.json in the declared layout (``schemas/stats.py``) from :func:`summarize`'s stats: every status,
    drop reason, raw status and hash source as a flat ``counts`` entry (``status_success``, ``reason_over_cap``,
    ...), one input per raw parquet, one output per final tar; ``seconds`` is the run's wall time."""
    counts = {"rows": stats["input"]["rows"], "uids": stats["input"]["uids"], "raw_shards": len(raw_files),
              "samples": stats["output"]["samples"], "shards": stats["output"]["shards"],
              "dedup_candidates": stats["dedup"]["candidates"],
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
        details={**{k: stats[k] for k in ("input", "dedup", "rebalance", "output", "image_sizes")},
                 "match_rule": match_rule},
    )


def counter_mismatches(counts: Mapping[str, int], counted: Mapping[str, int],
                       drop_reasons: Iterable[str]) -> dict[str, tuple[int, int]]:
    """Monitoring counters that differ from stats.json's ``counts``: name -> (stats, counter), for the
    ``status_*`` counts and each drop reason. Attempted-only metrics may count a retried bundle twice, so a
    difference is a warning, never an error."""
    expected = {name: n for name, n in counts.items() if name.startswith("status_")}
    expected.update({r: counts.get(f"reason_{r}", 0) for r in drop_reasons})
    return {name: (n, counted.get(name, 0)) for name, n in expected.items() if counted.get(name, 0) != n}
