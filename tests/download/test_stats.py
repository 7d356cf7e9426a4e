"""Stage 3's counts and stats.json (wit_builder.download.stats): what a shard adds to the counts, and the
documents computed from the counts."""

from __future__ import annotations

import pytest

from schemas.stats import validate as validate_stats
from wit_builder.download import plan as download_plan
from wit_builder.download import raw_shards, stats
from wit_builder.download.options import DownloadOptions


def shard(shard_id: int, rows: list[dict]) -> dict:
    """A shard's {shard}_stats.json for ``rows`` (status, error_message, bytes)."""
    return raw_shards.shard_stats(shard_id, [raw_shards.RawSample(r) for r in rows], "native")


def summed(outcomes: list[stats.ShardOutcome]) -> dict[str, int]:
    """The counts the frame sums from the shards (what WriteCounts writes), zeros for names not seen."""
    counts = dict.fromkeys(stats.COUNT_NAMES, 0)
    for outcome in outcomes:
        for name, n in stats.shard_counts(outcome).items():
            counts[name] += n
    return counts


def test_a_shard_adds_its_rows_per_status_and_this_runs_work_only_when_downloaded():
    rows = [{"status": "success", "bytes": 100}, {"status": "blocked", "error_message": "robots.txt disallows",
                                                  "bytes": None}]
    made = stats.shard_counts(stats.ShardOutcome(shard(0, rows), downloaded=True))
    no_reasons = {f"blocked_{r}": 0 for r in raw_shards.BLOCK_REASONS}
    assert made == {"shards": 1, "rows": 2, "bytes_downloaded": 100, "status_success": 1,
                    "status_failed_to_download": 0, "status_failed_to_decode": 0, "status_blocked": 1,
                    "status_filtered": 0, "shards_downloaded": 1, "rows_downloaded": 2, "rows_retried": 0,
                    "rows_recovered": 0, **no_reasons, "blocked_other": 1}  # a blocked row without a reason
    retried = stats.shard_counts(stats.ShardOutcome(shard(0, rows), downloaded=True, retried=1, recovered=1))
    assert retried == {**made, "rows_downloaded": 1, "rows_retried": 1, "rows_recovered": 1}
    earlier = stats.shard_counts(stats.ShardOutcome(shard(0, rows), downloaded=False))
    assert earlier == {k: v for k, v in made.items() if k not in stats.RUN_COUNTS}
    assert set(made) == set(stats.COUNT_NAMES)
    with pytest.raises(KeyError):  # a shard's stats without its counts
        stats.shard_counts(stats.ShardOutcome({"count": 1}, downloaded=False))


def test_totals_sum_the_shards_counts_and_report_what_failed():
    rows = [{"status": "failed_to_download", "error_message": f"HTTPSConnectionPool: DNS failure for https://h{i}/x",
             "bytes": None} for i in range(3)] + [{"status": "blocked", "error_message": "robots.txt disallows",
                                                    "bytes": None}]
    outcomes = [stats.ShardOutcome(shard(0, rows[:2]), True), stats.ShardOutcome(shard(1, rows[2:]), False)]
    counts = summed(outcomes)
    assert counts["shards"] == 2 and counts["rows"] == 4 and counts["bytes_downloaded"] == 0
    assert counts["status_failed_to_download"] == 3 and counts["status_success"] == 0
    assert (counts["shards_downloaded"], counts["rows_downloaded"]) == (1, 2)
    kinds: dict[str, int] = {}
    for outcome in outcomes:  # what the pipeline sums into the error kinds file
        for kind, n in outcome.stats["top_errors"].items():
            kinds[kind] = kinds.get(kind, 0) + n
    errors = stats.top_errors(kinds)
    assert errors == {"HTTPSConnectionPool: DNS failure for <url>": 3, "robots.txt disallows": 1}
    assert stats.nothing_succeeded(counts)
    report = stats.nothing_succeeded_report(counts, errors)
    assert report.splitlines()[0] == "nothing succeeded: all 4 rows were refused or failed. Top reasons:"
    assert "hint: the hosts are not reachable" in report and "robots.txt disallows our user agent" in report
    assert not stats.nothing_succeeded(dict.fromkeys(stats.COUNT_NAMES, 0))  # no rows: nothing failed either


def test_top_errors_keep_the_most_frequent_kinds_ties_by_text():
    kinds = {f"kind {i:02d}": 1 for i in range(30)} | {"often": 9}
    errors = stats.top_errors(kinds)
    assert len(errors) == raw_shards.TOP_ERRORS and list(errors)[:2] == ["often", "kind 00"]


def test_rows_per_input_counts_planned_rows_per_file():
    specs = [download_plan.ShardSpec(0, 0, ("a", "b"), ((0, 0), (1, 0))),
             download_plan.ShardSpec(1, 0, ("a", "b"), ((0, 1), (0, 2)))]
    assert stats.rows_per_input(specs) == {"a": 3, "b": 1}


def test_stats_document_and_summary_come_from_the_counts():
    specs = [download_plan.ShardSpec(0, 0, ("a.parquet",), ((0, 0), (0, 1))),
             download_plan.ShardSpec(1, 1, ("a.parquet",), ((0, 2),))]
    counts = dict.fromkeys(stats.COUNT_NAMES, 0) | {"shards": 2, "rows": 3, "bytes_downloaded": 7,
                                                    "status_success": 2, "status_filtered": 1,
                                                    "shards_downloaded": 1, "rows_downloaded": 1}
    options = DownloadOptions(pairs=("a.parquet",), out="raw", rows_per_shard=2)
    doc = stats.stats_document(options, specs, counts, {"image too small": 1}, 3.0)
    validate_stats(doc)
    assert doc["counts"] == {"shards": 2, "rows": 3, "bytes_downloaded": 7, "status_success": 2,
                             "status_failed_to_download": 0, "status_failed_to_decode": 0, "status_blocked": 0,
                             "status_filtered": 1, **{f"blocked_{r}": 0 for r in raw_shards.BLOCK_REASONS}}
    assert doc["inputs"] == [{"path": "a.parquet", "sha256": None, "bytes": None, "rows": 3}]
    assert doc["outputs"] == [{"path": "00000.parquet", "rows": 2}, {"path": "00001.parquet", "rows": 1}]
    assert doc["details"]["top_errors"] == {"image too small": 1} and doc["details"]["statuses"]["filtered"] == 1
    assert "out" not in doc["parameters"] and doc["timings"] == {"seconds": 3.0}
    assert stats.summary(counts, len(specs)) == [
        "3 rows in 2 shards: success=2 failed_to_download=0 failed_to_decode=0 blocked=0 filtered=1",
        "this run downloaded 1 rows in 1 shards"]
    assert not stats.nothing_succeeded(counts)


def test_blocked_rows_are_counted_per_reason_in_shard_stats_counts_and_summary():
    """Each opt-out reason is its own count (issue 23): robots.txt, X-Robots-Tag and TDMRep apart."""
    samples = [raw_shards.RawSample({"status": "blocked", "error_message": m, "bytes": None}, reason=r)
               for r, m in [("robots_txt", "robots.txt disallows"), ("tdm_reserved", "tdm-reservation 1"),
                            ("tdm_reserved", "tdmrep.json reserves TDM rights"), ("x_robots_tag", "noai"),
                            ("address", "loopback")]]
    samples.append(raw_shards.RawSample({"status": "success", "bytes": 3}, reason=None))
    doc = raw_shards.shard_stats(0, samples, "native")
    assert doc["blocked_reasons"] == {"address": 1, "robots_txt": 1, "tdm_reserved": 2, "x_robots_tag": 1}
    counts = summed([stats.ShardOutcome(doc, True)])
    assert (counts["blocked_tdm_reserved"], counts["blocked_robots_txt"], counts["blocked_x_robots_tag"],
            counts["blocked_address"], counts["blocked_other"]) == (2, 1, 1, 1, 0)
    assert stats.blocked_reasons(counts)["tdm_reserved"] == 2
    assert stats.summary(counts, 1)[0].endswith("(blocked: robots_txt=1 x_robots_tag=1 tdm_reserved=2 address=1)")
    # a shard written before reasons were counted: its blocked rows count as "other"
    old = {k: v for k, v in doc.items() if k != "blocked_reasons"}
    assert stats.shard_counts(stats.ShardOutcome(old, False))["blocked_other"] == 5
