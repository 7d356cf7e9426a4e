"""Query selection rules: eligibility, NPMI, ranking, budgets, no duplicates, determinism."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from schemas.queries import SOURCES
from wit_builder.queries import selection as qs
from wit_builder.queries.selection import Budgets, Candidate, Thresholds


def test_unigram_eligibility():
    t = Thresholds(min_unigram_count=3, min_bigram_count=2)
    assert qs.unigram_candidate("paris", 3, t) == Candidate("paris", 3, 3.0)
    assert qs.unigram_candidate("paris", 2, t) is None
    assert qs.unigram_candidate("1990", 50, t) is None  # no letter


def test_bigram_eligibility_and_npmi():
    t = Thresholds(min_unigram_count=3, min_bigram_count=2)
    assert qs.bigram_is_eligible("hong kong", 2, t)
    assert not qs.bigram_is_eligible("hong kong", 1, t)
    assert not qs.bigram_is_eligible("in 1990", 9, t)
    # words that only occur together: NPMI 1 whatever their frequency
    assert qs.npmi(10, 10, 10, 1000) == pytest.approx(1.0)
    assert qs.npmi(500, 500, 500, 1000) == pytest.approx(1.0)
    # independent words: NPMI 0
    assert qs.npmi(10, 100, 100, 1000) == pytest.approx(0.0)
    p_ab, p_a, p_b = 20 / 1000, 100 / 1000, 50 / 1000
    assert qs.npmi(20, 100, 50, 1000) == pytest.approx(math.log(p_ab / (p_a * p_b)) / -math.log(p_ab))


def test_title_and_wordnet_queries():
    assert qs.title_query("Mercury (planet)") == "mercury"
    assert qs.title_query("Apollo 11") == "apollo 11"
    assert qs.title_query("1990") is None and qs.title_query("!!!") is None
    assert qs.wordnet_query("ice_cream") == "ice cream" and qs.wordnet_query("Hong_Kong") == "hong kong"
    assert qs.wordnet_query("1000") is None


def test_count_ngrams_stops_bigrams_at_line_ends():
    unigrams, bigrams = Counter(), Counter()
    qs.count_ngrams("New York is big.\nBig apple, new York", unigrams, bigrams)
    assert unigrams == Counter({"new": 2, "york": 2, "big": 2, "is": 1, "apple": 1})
    assert bigrams == Counter({"new york": 2, "york is": 1, "is big": 1, "big apple": 1, "apple new": 1})
    assert "big big" not in bigrams


def test_budgets_scale_to_max_queries():
    assert Budgets().per_source() == {"unigram": 251_465, "bigram": 100_646, "title": 61_235, "wordnet": 86_654}
    assert sum(Budgets().per_source().values()) == 500_000
    scaled = Budgets(max_queries=1000).per_source()
    assert sum(scaled.values()) == 1000
    assert scaled == {"unigram": 503, "bigram": 201, "title": 123, "wordnet": 173}  # largest remainders
    few = Budgets(unigram_budget=5, bigram_budget=0, title_budget=0, wordnet_budget=0, max_queries=3)
    assert few.per_source()["unigram"] == 3
    assert few.requested() == {"unigram": 5, "bigram": 0, "title": 0, "wordnet": 0}  # as given, before scaling
    with pytest.raises(ValueError, match="title_budget must be >= 0"):
        Budgets(title_budget=-1)
    with pytest.raises(ValueError, match="thresholds must be >= 1, got min_unigram_count 0"):
        Thresholds(min_unigram_count=0)


def test_select_budgets_order_and_no_duplicates():
    candidates = {
        "unigram": [Candidate("paris", 50, 50.0), Candidate("the", 900, 900.0), Candidate("seine", 20, 20.0)],
        "bigram": [Candidate("new york", 30, 0.9), Candidate("of the", 400, 0.1)],
        "title": [Candidate("paris", 50, 12.0), Candidate("new york", 30, 9.0), Candidate("eiffel tower", 0, 3.0),
                  Candidate("louvre", 4, 1.0)],
        "wordnet": [Candidate("eiffel tower", 0, 0.0), Candidate("dog", 7, 30.0), Candidate("cat", 7, 30.0)],
    }
    budgets = {"unigram": 2, "bigram": 5, "title": 1, "wordnet": 2}
    rows, summary = qs.select(candidates, budgets)
    assert [(s, c.query) for s, c in rows] == [
        ("unigram", "the"), ("unigram", "paris"),  # budget 2: the best two by score
        ("bigram", "new york"), ("bigram", "of the"),  # fewer than the budget: all taken
        ("title", "eiffel tower"),  # "paris" and "new york" already taken; budget 1
        ("wordnet", "cat"), ("wordnet", "dog"),  # equal score and count: alphabetical
    ]
    assert summary["title"].already_taken == 2 and summary["title"].selected == 1
    assert summary["wordnet"].already_taken == 0  # "eiffel tower" ranks below the two it took
    queries = [c.query for _, c in rows]
    assert len(queries) == len(set(queries))


def test_wordnet_ties_put_single_words_before_phrases():
    # no SemCor score, no text count: a binding budget must not be filled alphabetically by phrases
    wordnet = [Candidate("aaron's rod", 0, 0.0), Candidate("a cappella", 0, 0.0), Candidate("motorcycle", 0, 0.0),
               Candidate("zebra", 0, 0.0), Candidate("abacus", 0, 2.0)]
    rows, _ = qs.select({"wordnet": wordnet}, {"unigram": 0, "bigram": 0, "title": 0, "wordnet": 3})
    assert [c.query for _, c in rows] == ["abacus", "motorcycle", "zebra"]


def test_select_is_deterministic_whatever_the_input_order():
    rng = random.Random(0)
    pool = [Candidate(f"w{i % 40}", rng.randint(1, 5), float(rng.randint(1, 3))) for i in range(40)]
    budgets = {"unigram": 10, "bigram": 0, "title": 10, "wordnet": 10}
    first = qs.select({"unigram": pool, "title": pool[::-1], "wordnet": pool}, budgets)[0]
    for _ in range(5):
        rng.shuffle(pool)
        assert qs.select({"unigram": pool, "title": pool[::-1], "wordnet": pool}, budgets)[0] == first
    assert len(first) == 30


def test_phrase_count():
    counts = {"paris": 5, "new york": 3}
    assert qs.phrase_count("paris", counts) == 5 and qs.phrase_count("new york", counts) == 3
    assert qs.phrase_count("new york city", {"new york city": 9}) == 0  # longer phrases are not counted
    assert qs.is_short_phrase("paris") and qs.is_short_phrase("new york") and not qs.is_short_phrase("new york city")


def test_prune_sizes_are_cumulative_budgets_in_source_order():
    budgets = {"unigram": 100, "bigram": 30, "title": 50, "wordnet": 20}
    sizes = qs.prune_sizes(budgets)
    running = 0
    for source in SOURCES:
        running += budgets[source]
        assert sizes[source] == running
    with pytest.raises(KeyError):
        qs.prune_sizes({"unigram": 1})


def test_short_phrases_and_token_counts_for_the_bigram_joins():
    candidates = [Candidate(q, 0, 1.0) for q in ("paris", "new york", "new york city")]
    assert qs.short_phrases(candidates) == frozenset({"paris", "new york"})
    assert qs.with_token_count([42], [("new york", 7), ("york city", 3)]) == [("new york", 7, 42), ("york city", 3, 42)]
    assert qs.with_token_count([], [("xq zz", 2)]) == [("xq zz", 2, 0)]
