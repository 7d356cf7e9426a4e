"""Stage 4's statistics (wit_builder.finalize.stats): the counts each row adds, counts -> stats and stats.json,
the accounting checks, the summary line and the warnings; pure functions, no Beam."""

from __future__ import annotations

from collections import Counter

import pytest

from schemas.finalize import FINAL_STATUSES
from schemas.stats import validate as validate_stats
from tests.finalize.examples import record
from wit_builder.finalize import dataset_card, stats
from wit_builder.finalize.inputs import Inputs
from wit_builder.finalize.options import FinalizeOptions
from wit_builder.finalize.rules import AccountingError


def counts_of(read, candidates, final, **more: int) -> dict[str, int]:
    """What the pipeline's DoFns count for these rows, summed (the frame's ``_counts.json``)."""
    names = [name for r in read for name in stats.input_counts(r)]
    names += [name for r in candidates for name in stats.candidate_counts(r)]
    names += [name for r in final for name in stats.final_counts(r)]
    return dict(Counter(names)) | more


def test_each_row_adds_the_counts_of_its_stage():
    success = record("01", size=(640, 100_000)).replace(hash_source="stored_bytes")
    assert stats.input_counts(success) == ["rows", "raw_status_success"]
    assert stats.candidate_counts(success) == ["hash_source_stored_bytes"]
    assert stats.final_counts(success) == ["status_success", "reason_success", "size_width_512-1023",
                                           "size_height_4096+"]
    duplicate = success.replace(status="duplicate", reason="near_duplicate")
    assert stats.final_counts(duplicate) == ["status_duplicate", "reason_near_duplicate"]  # no sizes: not shipped
    assert stats.query_row(("moon", {"input": [2], "final": []})) == ("moon", 2, 0)


def test_summary_counts_statuses_reasons_and_sizes_from_the_counts():
    read = [record("01", queries=("moon",)), record("02", queries=("moon", "sun")),
            record("03", status="failed_to_download")]
    dup = read[1].replace(status="duplicate", reason="near_duplicate", duplicate_of="01")
    survivor = read[0].replace(index=0, key="0000000000", shard="00000")
    counts = counts_of(read, read[:2], [survivor, dup, read[2]], uids=3)
    summary, sizes = stats.summarize(counts, {"00000": 1}, raw_names=["00000"], expected_rows=3,
                                     samples_per_shard=4)
    assert summary["statuses"] == {s: {"success": 1, "duplicate": 1, "failed_to_download": 1}.get(s, 0)
                                   for s in FINAL_STATUSES}
    assert summary["reasons"] == {"failed_to_download": 1, "near_duplicate": 1, "success": 1}
    assert summary["dedup"] == {"candidates": 2, "repeated_uids": 0, "exact_duplicates": 0, "near_duplicates": 1,
                                "decontaminated": 0, "eval_images_hashed": 0, "eval_images_unreadable": 0}
    assert sizes == {"00000": 1} and summary["input"]["uids"] == 3 and summary["rebalance"]["queries_over_cap"] == 0
    assert summary["image_sizes"] == {"width": {dataset_card.size_bin(640): 1},
                                      "height": {dataset_card.size_bin(480): 1}}
    doc = stats.stats_document(summary, raw_files=["/raw/00000.parquet"], settings={"seed": 0},
                               sizes=sizes, seconds=1.5, match_rule="normalized")
    validate_stats(doc)
    assert doc["counts"]["status_success"] == 1 and doc["counts"]["reason_near_duplicate"] == 1
    assert doc["counts"]["raw_status_success"] == 2 and doc["details"]["match_rule"] == "normalized"


def test_summary_refuses_lost_rows_and_shards_off_the_plan():
    read = [record("01"), record("02")]
    counts = counts_of(read, read, [read[0].replace(index=0)])  # one row never got a final status
    with pytest.raises(AccountingError, match="2 rows in the raw parquets, 2 read, 1 with a final status"):
        stats.summarize(counts, {"00000": 1}, raw_names=["00000"], expected_rows=2, samples_per_shard=4)
    counts = counts_of(read, read, read)
    with pytest.raises(AccountingError, match="shard sizes .* differ from the plan"):
        stats.summarize(counts, {"00000": 1, "00001": 1}, raw_names=["00000"], expected_rows=2, samples_per_shard=4)
    with pytest.raises(AccountingError, match="2 successes but 1 samples in shards"):
        stats.summarize(counts, {"00000": 1}, raw_names=["00000"], expected_rows=2, samples_per_shard=4)


def test_parameters_are_the_options_with_what_was_resolved():
    options = FinalizeOptions(raw=("a/", "b/*.parquet"), out="o", per_query_cap=5, decontaminate="eval")
    inputs = Inputs(raw_names=(("a/0.parquet", "0"),), rows=1,
                    eval_files=("eval/x.png", "eval/y.png"), seed=7, match_rule="metaclip",
                    language_caps=(("en", 5), ("ja", 2)))
    assert stats.parameters(options, inputs) == {
        "raw": "a/ b/*.parquet", "samples_per_shard": 10_000, "per_query_cap": 5, "phash_distance": 4, "seed": 7,
        "decontaminate": "eval", "eval_images": 2, "match_rule": "metaclip", "language_caps": {"en": 5, "ja": 2}}


def test_summary_line_and_warnings():
    counts = {"rows": 1200, "samples": 10, "shards": 1, "status_success": 10, "status_blocked": 0,
              "status_duplicate": 1190, "raw_status_success": 1200}
    assert stats.summary(counts, 2.0) == ["1,200 rows -> 10 samples in 1 shards (duplicate 1190, success 10)",
                                          "600 rows/s"]
    assert stats.run_warnings(counts, counts, "out/accounting/rows") == []
    lines = stats.run_warnings({**counts, "reason_raw_image_unreadable": 2}, counts, "out/accounting/rows")
    assert lines[0].startswith("monitoring counters differ") and "'reason_raw_image_unreadable': (2, 0)" in lines[0]
    assert lines[1].startswith("2 stored image(s) could not be read back") and "out/accounting/rows" in lines[1]


def test_counter_mismatches_report_only_differences():
    counts = {"status_success": 3, "status_duplicate": 1, "reason_near_duplicate": 1, "status_blocked": 0}
    counted = {"status_success": 3, "status_duplicate": 2, "reason_near_duplicate": 1}  # no counter for a zero
    assert stats.counter_mismatches(counts, counted) == {"status_duplicate": (1, 2)}


def test_rows_per_language_reach_the_card():
    """Each row with stage 2's caption language is counted under it; the card lists the languages with their
    final samples, over-cap rows and re-cap (issue 21)."""
    from tests.finalize.examples import record
    from wit_builder.finalize import dataset_card

    kinds = [("en", "success"), ("en", "over_cap"), ("ja", "success"), (None, "success")]
    rows = [record(f"{i:032x}").replace(lang=lang, status=status, reason=status)
            for i, (lang, status) in enumerate(kinds)]
    counts: dict[str, int] = {}
    for row in rows:
        for name in stats.final_counts(row):
            counts[name] = counts.get(name, 0) + 1
    assert stats.languages(counts) == {"en": {"success": 1, "over_cap": 1}, "ja": {"success": 1}}
    lines = dataset_card._language_lines({"languages": stats.languages(counts),
                                          "settings": {"language_caps": {"en": 5, "ja": 2}}})
    assert "| en | 2 | 1 | 1 | 5 |" in lines and "| ja | 1 | 1 | 0 | 2 |" in lines
