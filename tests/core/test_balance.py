"""Balancing (wit_builder.core.balance): the bounded combiner + cut table keep exactly the reference selection;
probabilistic mode's rate; stage 4's per-query thresholds (``over_cap_queries``, ``sample_rank``) against a
brute-force reference selection (stage 4's Beam side: tests/finalize/test_pipeline.py)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.references import reference_hard_selection, reference_kept, thresholds
from wit_builder.core.balance import (
    BalanceConfig,
    SmallestRanks,
    cut_value,
    kept_queries,
    over_cap_queries,
    sample_rank,
)
from wit_builder.core.uid import hash_rank, pair_uid

QUERY_NAMES = [f"q{i}" for i in range(8)]


def balance(pairs: dict[str, list[str]], config: BalanceConfig, shards: int, rng: random.Random) -> dict[str, list]:
    """What the pipeline does, without Beam: partial accumulators on random 'workers', merged, cut, kept."""
    ranks = SmallestRanks(config.target if config.mode == "hard" else 1)
    partial: list[dict[str, tuple]] = [{} for _ in range(shards)]
    for uid, queries in pairs.items():
        worker = partial[rng.randrange(shards)]
        for q in queries:
            worker[q] = ranks.add(worker.get(q, ranks.create()), hash_rank(uid, config.seed))
    cuts = {}
    for q in {q for qs in pairs.values() for q in qs}:
        matched, threshold = ranks.extract(ranks.merge(ranks.compact(w[q]) for w in partial if q in w))
        assert matched == sum(q in qs for qs in pairs.values())
        if (cut := cut_value(config, matched, threshold)) is not None:
            cuts[q] = cut
    return {uid: kept_queries(uid, hash_rank(uid, config.seed), qs, cuts, config) for uid, qs in pairs.items()}


pair_sets = st.dictionaries(
    st.integers(0, 10**9).map(lambda i: pair_uid(f"http://h.example/{i}.jpg", "c")),
    st.lists(st.sampled_from(QUERY_NAMES), min_size=1, max_size=4, unique=True),
    min_size=1, max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(pairs=pair_sets, cap=st.integers(1, 60), seed=st.integers(-(2**31), 2**31), shards=st.integers(1, 5),
       oversample=st.sampled_from([1.0, 1.5, 2.0]), order_seed=st.integers(0, 1000))
def test_hard_mode_keeps_exactly_the_reference_selection(pairs, cap, seed, shards, oversample, order_seed) -> None:
    config = BalanceConfig("hard", cap, seed, oversample)
    kept = balance(pairs, config, shards, random.Random(order_seed))
    reference = reference_hard_selection(pairs, config.target, seed)
    for q, uids in reference.items():
        assert {uid for uid, qs in kept.items() if q in qs} == uids
        assert len(uids) <= config.target
    # A pair survives exactly when one of its queries selected it.
    assert {uid for uid, qs in kept.items() if qs} == set().union(*reference.values())


def test_smallest_ranks_stays_bounded() -> None:
    ranks = SmallestRanks(100)
    acc = ranks.create()
    values = list(range(10_000))
    random.Random(1).shuffle(values)
    for v in values:
        acc = ranks.add(acc, v)
        assert len(acc[1]) < 200
    assert ranks.extract(acc) == (10_000, 99)
    assert ranks.extract(ranks.add(ranks.create(), 5)) == (1, None)  # under the cap: nothing cut


@pytest.mark.parametrize("matched, target", [(20_000, 1_000), (5_000, 2_500), (3_000, 100)])
def test_probabilistic_kept_counts_match_p(matched: int, target: int) -> None:
    config = BalanceConfig("probabilistic", per_query_cap=target, seed=7)
    p = target / matched
    cuts = {"dog": cut_value(config, matched, None)}
    assert cuts["dog"] == pytest.approx(p)
    kept = sum(bool(kept_queries(pair_uid(f"http://d.example/{i}", "dog"), 0, ["dog"], cuts, config))
               for i in range(matched))
    sd = math.sqrt(matched * p * (1 - p))
    assert abs(kept - target) < 5 * sd  # binomial(matched, p): 5 sigma, a false alarm once in 3.5 million runs


def test_probabilistic_any_query_keeps() -> None:
    config = BalanceConfig("probabilistic", per_query_cap=10, seed=3)
    # "rare" is under its cap (no cut row): every pair that matches it survives, whatever "common" draws.
    uids = [pair_uid(f"http://r.example/{i}", "x") for i in range(200)]
    cuts = {"common": cut_value(config, 1000, None)}
    assert all(kept_queries(u, 0, ["common", "rare"], cuts, config)[-1] == "rare" for u in uids)
    kept_common = sum("common" in kept_queries(u, 0, ["common", "rare"], cuts, config) for u in uids)
    assert 0 < kept_common < 12  # p = 0.01 over 200 draws


def test_oversample_target_and_validation() -> None:
    assert BalanceConfig(per_query_cap=20_000, oversample=1.5).target == 30_000
    assert BalanceConfig(per_query_cap=3, oversample=1.1).target == 4
    for bad in (dict(mode="soft"), dict(per_query_cap=0), dict(oversample=0.5), dict(oversample=float("inf"))):
        with pytest.raises(ValueError):
            BalanceConfig(**bad)


def test_larger_target_selects_a_superset() -> None:
    # One rank per uid: what stage 4 keeps at the cap is inside what stage 2 kept with --oversample.
    rng = random.Random(5)
    pairs = {pair_uid(f"http://s.example/{i}", "c"): rng.sample(QUERY_NAMES, 2) for i in range(500)}
    small = balance(pairs, BalanceConfig("hard", 20, 9), 3, rng)
    large = balance(pairs, BalanceConfig("hard", 20, 9, oversample=2.0), 3, rng)
    assert all(set(small[u]) <= set(large[u]) for u in pairs)


# ---- stage 4's cap: per-query thresholds over the kept samples ----

CAP_QUERIES = ["cat", "dog", "space", "car", "tree"]
samples_strategy = st.lists(
    st.tuples(st.text("0123456789abcdef", min_size=8, max_size=8), st.lists(st.sampled_from(CAP_QUERIES), max_size=3)),
    max_size=60, unique_by=lambda s: s[0],
)


@settings(max_examples=200, deadline=None)
@given(samples_strategy, st.integers(1, 6), st.integers(0, 3))
def test_over_cap_queries_keep_exactly_the_reference_selection(samples, cap, seed):
    table = thresholds(samples, cap, seed)
    kept = {uid for uid, queries in samples if over_cap_queries(uid, queries, table, seed) is None}
    assert kept == reference_kept(samples, cap, seed)
    # Only queries over the cap have a threshold (the side-input table stays small).
    for query in CAP_QUERIES:
        members = [uid for uid, queries in samples if query in queries]
        assert (query in table) == (len(members) > cap)


def test_rank_is_stage_two_rank_with_uid_tie_break():
    assert sample_rank("00ff", 3) == (hash_rank("00ff", 3), "00ff")
    assert sample_rank("00ff", 3) != sample_rank("00ff", 4)


def test_dropped_sample_names_the_queries_that_dropped_it():
    samples = [(f"{i:04x}", ["space", "moon"]) for i in range(5)]
    table = thresholds(samples, 2, 0)
    dropped = [over_cap_queries(uid, q, table, 0) for uid, q in samples]
    assert sum(d is None for d in dropped) == 2
    assert all(d in (None, ["moon", "space"]) for d in dropped)


def test_cap_must_be_positive():
    with pytest.raises(ValueError, match=">= 1"):
        thresholds([], 0, 0)


# ---- per-language caps: MetaCLIP 2's global_count (t_to_p on English, p_to_t on every other language) ----

def test_language_caps_worked_example() -> None:
    """A worked example by hand, then against MetaCLIP 2's published ``t_to_p``/``p_to_t`` (tests/references.py).

    English, cap 100: entries matched [0, 5, 20, 50, 100, 300, 525] times (1,000 matches); entries under 100 hold
    0+5+20+50 = 75 of them: p = 0.075. Japanese: [0, 1, 2, 3, 4, 10, 30, 50] (100 matches); sorted running shares
    0, .01, .03, .06, .10, .20, .50, 1.0; the one closest to .075 is .06, at count 3: Japanese's cap is 3.
    Thai [0, 0, 7] (7 matches): shares 0, 0, 1.0; closest to .075 is the first 0, count 0: cap 1 (at least 1).
    """
    from tests.references import reference_p_to_t, reference_t_to_p
    from wit_builder.core.balance import cap_for_share, language_caps, tail_share

    en = np.array([0, 5, 20, 50, 100, 300, 525])
    ja = np.array([0, 1, 2, 3, 4, 10, 30, 50])
    th = np.array([0, 0, 7])
    assert tail_share(en, 100) == pytest.approx(0.075) == reference_t_to_p(en, 100)
    assert cap_for_share(ja, 0.075) == 3 == reference_p_to_t(ja, 0.075)
    assert reference_p_to_t(th, 0.075) == 0 and cap_for_share(th, 0.075) == 1
    assert language_caps({"en": en, "ja": ja, "th": th}, 100) == {"en": 100, "ja": 3, "th": 1}
    assert language_caps({"en": en, "ja": ja}, 100, "same") == {"en": 100, "ja": 100}
    assert language_caps({"ja": ja}, 100) == {"ja": 100}  # no English: the cap itself
    with pytest.raises(ValueError, match="language cap rule"):
        language_caps({"ja": ja}, 100, "uniform")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=40), st.lists(st.integers(0, 10_000), min_size=1,
                                                                          max_size=40), st.integers(1, 5_000))
def test_language_caps_equal_metaclip2_formula(en: list[int], other: list[int], cap: int) -> None:
    from tests.references import reference_p_to_t, reference_t_to_p
    from wit_builder.core.balance import language_caps

    if not sum(en) or not sum(other):
        return  # MetaCLIP 2 divides by zero there; ours: share 0.0 and cap 1 (tested above)
    expected = max(1, reference_p_to_t(other, reference_t_to_p(en, cap)))
    assert language_caps({"en": np.array(en), "xx": np.array(other)}, cap) == {"en": cap, "xx": expected}
