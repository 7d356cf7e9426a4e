"""wit_builder.core.balance and the Beam Rebalance transform against a brute-force reference selection."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.finalize import RawRecord
from tests import references
from tests.conftest import BEAM_IN_PROCESS
from wit_builder.beam.counting import COUNTS
from wit_builder.core import balance
from wit_builder.core.uid import hash_rank as stage2_rank
from wit_builder.finalize.pipeline import DECIDED, Rebalance

QUERIES = ["cat", "dog", "space", "car", "tree"]
samples_strategy = st.lists(
    st.tuples(st.text("0123456789abcdef", min_size=8, max_size=8), st.lists(st.sampled_from(QUERIES), max_size=3)),
    max_size=60, unique_by=lambda s: s[0],
)


def reference_kept(samples, cap, seed):
    """Brute force: each query keeps its ``cap`` smallest-ranked samples; a sample stays if any query keeps it."""
    kept = set()
    for query in QUERIES:
        members = sorted((stage2_rank(uid, seed), uid) for uid, queries in samples if query in queries)
        kept.update(uid for _, uid in members[:cap])
    kept.update(uid for uid, queries in samples if not queries)
    return kept


@settings(max_examples=200, deadline=None)
@given(samples_strategy, st.integers(1, 6), st.integers(0, 3))
def test_keeps_exactly_the_reference_selection(samples, cap, seed):
    table = references.thresholds(samples, cap, seed)
    kept = {uid for uid, queries in samples if balance.over_cap_queries(uid, queries, table, seed) is None}
    assert kept == reference_kept(samples, cap, seed)
    # Only queries over the cap have a threshold (the side-input table stays small).
    for query in QUERIES:
        members = [uid for uid, queries in samples if query in queries]
        assert (query in table) == (len(members) > cap)


def test_rank_is_stage_two_rank_with_uid_tie_break():
    assert balance.sample_rank("00ff", 3) == (stage2_rank("00ff", 3), "00ff")
    assert balance.sample_rank("00ff", 3) != balance.sample_rank("00ff", 4)


def test_dropped_sample_names_the_queries_that_dropped_it():
    samples = [(f"{i:04x}", ["space", "moon"]) for i in range(5)]
    table = references.thresholds(samples, 2, 0)
    dropped = [balance.over_cap_queries(uid, q, table, 0) for uid, q in samples]
    assert sum(d is None for d in dropped) == 2
    assert all(d in (None, ["moon", "space"]) for d in dropped)


def test_cap_must_be_positive():
    with pytest.raises(ValueError, match=">= 1"):
        references.thresholds([], 0, 0)


def test_beam_rebalance_equals_the_pure_function():
    samples = [(f"{i:032x}", [QUERIES[i % 3], QUERIES[(i * 7) % 5]] if i % 11 else []) for i in range(120)]
    rows = [RawRecord(key=None, uid=uid, url=f"https://example.org/{uid}.jpg", caption=None,
                      queries=tuple(sorted(set(q))), status="success", error_message=None, http_status=200, width=64,
                      height=64, original_width=64, original_height=64, sha256=None, phash=None, bytes=1000,
                      shard=None, duplicate_of=None, raw_shard="00000", raw_key=f"{i:09d}", row=i,
                      raw_rows=len(samples), raw_status="success", reason="success")
            for i, (uid, q) in enumerate(samples)]
    cap, seed = 7, 5
    expected_kept = reference_kept(samples, cap, seed)
    with BeamTestPipeline(options=beam.options.pipeline_options.PipelineOptions(BEAM_IN_PROCESS)) as p:
        out = p | beam.Create(rows) | Rebalance(cap, seed)
        assert_that(out["kept"] | "KeptUids" >> beam.Map(lambda r: r.uid), equal_to(sorted(expected_kept)),
                    label="Kept")
        assert_that(out[DECIDED] | "DroppedUids" >> beam.Map(lambda r: (r.uid, r.status)),
                    equal_to([(uid, "over_cap") for uid, _ in samples if uid not in expected_kept]),
                    label="Dropped")
        over = sum(1 for q in QUERIES if sum(q in s[1] for s in samples) > cap)
        assert_that(out[COUNTS] | "SumCounts" >> beam.CombinePerKey(sum), equal_to([("queries_over_cap", over)]),
                    label="QueriesOverCap")
