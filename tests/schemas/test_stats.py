"""The stats.json envelope every stage writes (schemas.stats): the validator names the problem."""

from __future__ import annotations

import pytest

from schemas import stats as stats_schema


def good_stats() -> dict:
    return stats_schema.envelope(
        "download", inputs=[stats_schema.input_entry("a.parquet", rows=3)], parameters={"threads": 2},
        counts={"rows": 3, "status_success": 3}, outputs=[stats_schema.output_entry("00000.parquet", 3)],
        seconds=1.5, details={"statuses": {"success": 3}})


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("details"), "missing \\['details'\\]"),
    (lambda d: d.update(extra=1), "unexpected \\['extra'\\]"),
    (lambda d: d.update(stage="train"), "stage must be one of"),
    (lambda d: d.update(version=2), "version must be 1"),
    (lambda d: d["counts"].update(rows=-1), "counts.rows must be a non-negative integer"),
    (lambda d: d["counts"].update(rows=1.5), "counts.rows must be a non-negative integer"),
    (lambda d: d["inputs"][0].pop("sha256"), "inputs\\[0\\] must have exactly the keys"),
    (lambda d: d["outputs"][0].update(rows="3"), "outputs\\[0\\].rows has the wrong type"),
    (lambda d: d["timings"].pop("seconds"), "timings.seconds is missing"),
])
def test_stats_validator_names_the_problem(change, message):
    doc = good_stats()
    stats_schema.validate(doc)
    change(doc)
    with pytest.raises(stats_schema.StatsError, match=message):
        stats_schema.validate(doc)
