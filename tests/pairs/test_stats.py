"""``wit_builder.pairs.stats``: count names, per-query totals, the bad-records list, the stats.json document and
the summary line, from given counts."""

from __future__ import annotations

import json

import numpy as np

from schemas.stats import validate
from wit_builder.core.balance import BalanceConfig
from wit_builder.pairs import stats
from wit_builder.pairs.readers.layouts import Layout, PoolOptions
from wit_builder.pairs.readers.records import BAD_REASONS, FILTER_REASONS, Rejection


def test_every_reason_has_a_count_and_names_are_unique() -> None:
    assert set(FILTER_REASONS) | set(BAD_REASONS) <= set(stats.COUNTS)
    assert len(set(stats.COUNTS)) == len(stats.COUNTS)
    assert set(stats.QUERY_TOTALS) <= set(stats.COUNTS) and "bad_records" in stats.COUNTS


def test_query_totals() -> None:
    assert stats.query_totals(np.array([0, 3, 12, 13, 40]), target=12) == {
        "queries": 5, "queries_matched": 4, "queries_capped": 2}
    assert stats.query_totals(np.zeros(0, np.int64), target=1) == {
        "queries": 0, "queries_matched": 0, "queries_capped": 0}


def test_bad_records_are_sorted_json_lines() -> None:
    data = stats.bad_records_jsonl([Rejection("non_utf8", "b.jsonl", 2, "caption: é?"),
                                    Rejection("malformed_json", "a.jsonl", 7)])
    lines = data.decode().splitlines()
    assert [json.loads(line)["file"] for line in lines] == ["a.jsonl", "b.jsonl"]
    assert json.loads(lines[1]) == {"file": "b.jsonl", "offset": 2, "reason": "non_utf8", "detail": "caption: é?"}
    assert "é" in lines[1] and stats.bad_records_jsonl([]) == b""


def test_document_is_made_from_the_counts() -> None:
    counts = dict.fromkeys(stats.COUNTS, 0) | {"records": 10, "candidates": 9, "matched": 4, "kept": 3,
                                               "queries": 6, "bad_records": 1, "pair_files": 2, "queries_capped": 1}
    pool = PoolOptions("auto", "URL", "TEXT", layouts=(("*.tsv", Layout("tsv", "1", "0", False)),))
    parameters = stats.parameters(BalanceConfig("hard", 2, 5, 1.5), pool, 100, "metaclip")
    assert parameters["target"] == 3 and parameters["pool_layouts"] == [
        ["*.tsv", {"fmt": "tsv", "url_col": "1", "caption_col": "0", "header": False}]]
    doc = stats.document(queries=[("q/queries.parquet", "ab", 6)], pool_files=["p/a.parquet"],
                         parameters=parameters, counts=counts, pair_files=["pairs-00000-of-00002.parquet",
                                                                           "pairs-00001-of-00002.parquet"],
                         max_matched=9, max_kept=3, first_bad=[{"file": "x"}], seconds=1.5)
    validate(doc)
    assert doc["counts"] == counts
    assert doc["inputs"][0] == {"path": "q/queries.parquet", "sha256": "ab", "bytes": None, "rows": 6}
    assert doc["outputs"][-2:] == [{"path": "query_counts.parquet", "rows": 6},
                                   {"path": "bad_records.jsonl", "rows": 1}]
    assert doc["details"] == {"match_rule": "metaclip", "languages": {}, "queries": {"max_matched": 9, "max_kept": 3},
                              "pairs": {"file_names": ["pairs-00000-of-00002.parquet", "pairs-00001-of-00002.parquet"]},
                              "bad_records": {"file": "bad_records.jsonl", "listed": 1, "first": [{"file": "x"}]}}
    assert stats.summary(counts) == ["10 records -> 9 candidates -> 4 matched -> 0 unique -> 3 kept in 2 file(s)",
                                     "1 bad records", "1 queries capped"]
    many = counts | {"bad_records": 10 * stats.MAX_BAD_RECORDS}  # counted all, listed the first MAX_BAD_RECORDS
    doc = stats.document(queries=[("q/queries.parquet", "ab", 6)], pool_files=["p/a.parquet"],
                         parameters=parameters, counts=many, pair_files=[], max_matched=9, max_kept=3,
                         first_bad=[{"file": "x"}], seconds=1.5)
    assert doc["outputs"][-1] == {"path": "bad_records.jsonl", "rows": stats.MAX_BAD_RECORDS}
    assert doc["details"]["bad_records"]["listed"] == stats.MAX_BAD_RECORDS
