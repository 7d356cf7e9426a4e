"""The Aho-Corasick matcher against the brute-force reference of the shared match rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.references import reference_match
from wit_builder.core.textnorm import normalize
from wit_builder.pairs.matcher import QueryMatcher, fast_normalize, validate_queries

# Words chosen to collide: prefixes of each other, shared suffixes, accents, apostrophes, digits,
# a full-width form (NFKC folds it) and case variants.
WORDS = ["a", "ab", "ba", "b", "new", "york", "New", "YORK", "city", "café", "cafe", "don't", "o'brien",
         "covid", "19", "ｎｅｗ", "ﬁsh", "fish", "straße", "STRASSE", "日本", "x"]
SEPARATORS = [" ", "  ", "-", ", ", "/", "_", "\n", "'", "!", " (", ") ", "\u2019", "\t"]

words = st.sampled_from(WORDS)
phrases = st.lists(words, min_size=1, max_size=3).map(" ".join)
queries_lists = st.lists(phrases.map(normalize).filter(bool), min_size=1, max_size=25)


@st.composite
def texts(draw) -> str:
    parts = draw(st.lists(words, min_size=0, max_size=12))
    out = draw(st.sampled_from(["", " ", "..."]))
    for part in parts:
        out += part + draw(st.sampled_from(SEPARATORS))
    return out


@settings(max_examples=300, deadline=None)
@given(queries=queries_lists, text_batch=st.lists(texts(), min_size=1, max_size=8))
def test_automaton_equals_brute_force(queries: list[str], text_batch: list[str]) -> None:
    matcher = QueryMatcher(queries)
    assert matcher.match_batch(text_batch) == [reference_match(queries, t) for t in text_batch]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60), st.lists(st.text(max_size=12).map(normalize).filter(bool), min_size=1, max_size=10))
def test_arbitrary_unicode_equals_brute_force(text: str, queries: list[str]) -> None:
    assert QueryMatcher(queries).match(text) == reference_match(queries, text)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet=st.characters(max_codepoint=127)), texts()))
def test_fast_normalize_is_the_spec(text: str) -> None:
    assert fast_normalize(text) == normalize(text)


def test_token_boundaries_case_and_overlaps() -> None:
    matcher = QueryMatcher(["new york", "york city", "new york city", "cat", "café", "don't", "covid 19"])
    assert matcher.match("Skyline of NEW YORK CITY at night") == ["new york", "new york city", "york city"]
    assert matcher.match("concatenate the catalogue") == []  # no match inside a word
    assert matcher.match("a cat, a CAT and a Cat!") == ["cat"]  # each query once
    assert matcher.match("Café du Monde") == ["café"]
    assert matcher.match("cafe") == []  # accents stay
    assert matcher.match("I don\u2019t know") == ["don't"]  # curly apostrophe folds
    assert matcher.match("COVID-19 ward") == ["covid 19"]  # hyphen separates tokens
    assert matcher.match("") == []


def test_unicode_offsets_cut_the_right_query() -> None:
    # STORE_LENGTH slices hits back out of the text: multi-byte characters must not shift them.
    matcher = QueryMatcher(["日本", "東京 タワー", "e", "strasse"])
    assert matcher.match("東京 タワー と 日本 の E") == ["e", "日本", "東京 タワー"]
    assert matcher.match("Straße") == ["strasse"]  # casefold: ß -> ss


def test_duplicate_queries_are_one_entry() -> None:
    matcher = QueryMatcher(["dog", "dog", "red dog"])
    assert matcher.num_queries == 2
    assert matcher.match("a red dog") == ["dog", "red dog"]


@pytest.mark.parametrize("bad", [["New York"], ["  dog"], ["dog!"], [""], []])
def test_unnormalized_queries_are_rejected(bad: list[str]) -> None:
    with pytest.raises(ValueError):
        validate_queries(bad, "queries.parquet")


def test_matcher_rejects_padding_and_empty() -> None:
    with pytest.raises(ValueError, match="not normalized"):
        QueryMatcher(["dog", " cat"])
    with pytest.raises(ValueError, match="no queries"):
        QueryMatcher([])


# ---- the stage's batch path: column-wise haystacks and id scans ----

@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=40), st.text(alphabet=st.characters(max_codepoint=127), max_size=40),
                          texts()), min_size=1, max_size=20))
def test_padded_haystacks_equal_the_spec_row_by_row(batch: list[str]) -> None:
    """The vectorized haystacks (ASCII without apostrophes column-wise, the rest per row) are the spec's."""
    import pyarrow as pa

    from wit_builder.pairs.matcher import padded_haystacks

    assert padded_haystacks(pa.array(batch, pa.string())) == [f" {normalize(t)} " for t in batch]


@settings(max_examples=200, deadline=None)
@given(queries=queries_lists, text_batch=st.lists(texts(), min_size=1, max_size=12))
def test_match_ids_equal_match(queries: list[str], text_batch: list[str]) -> None:
    """``match_ids`` over a batch: matched rows, counts and sorted ids naming exactly ``match``'s queries."""
    matcher = assert_batch_equals_match(queries, text_batch)
    assert matcher.entries == sorted(set(queries))


def assert_batch_equals_match(queries: list[str], text_batch: list[str]) -> QueryMatcher:
    """``match_ids`` over ``text_batch``: matched rows, counts and sorted ids naming exactly ``match``'s queries."""
    import pyarrow as pa

    matcher = QueryMatcher(queries)
    column = pa.array(text_batch, pa.string())
    rows, lengths, ids = matcher.match_ids(matcher.haystacks(column, column))
    expected = {i: matcher.match(t) for i, t in enumerate(text_batch) if matcher.match(t)}
    assert rows.tolist() == sorted(expected)
    assert lengths.tolist() == [len(expected[r]) for r in sorted(expected)]
    assert [matcher.entries[i] for i in ids.tolist()] == [q for r in sorted(expected) for q in expected[r]]
    return matcher


@settings(max_examples=150, deadline=None)
@given(queries=queries_lists, text_batch=st.lists(st.one_of(texts(), st.text(max_size=30)), min_size=1, max_size=8))
def test_a_matcher_with_a_language_segments_in_match_and_haystacks_alike(queries: list[str],
                                                                         text_batch: list[str]) -> None:
    """Built with stage 1's language, ``match`` segments as the stage's ``haystacks`` do (``core.segment``), and
    equals the brute force over segmented text; on text without a spaceless-script character it is the textnorm
    spec's match (the language-blind rule of English)."""
    import pyarrow as pa

    from wit_builder.core import segment

    matcher = QueryMatcher(queries, "ja")
    column = pa.array(text_batch, pa.string())
    rows, lengths, ids = matcher.match_ids(matcher.haystacks(column, column))
    names = iter([matcher.entries[i] for i in ids.tolist()])
    found = {row: [next(names) for _ in range(n)] for row, n in zip(rows.tolist(), lengths.tolist(), strict=True)}
    for i, text in enumerate(text_batch):
        brute = sorted({q for q in queries if f" {q} " in f" {segment.normalize(text)} "})
        assert matcher.match(text) == found.get(i, []) == brute
        if not segment.needs_segmentation(normalize(text)):
            assert matcher.match(text) == reference_match(queries, text)


def test_real_japanese_captions_match_segmented_queries_english_ones_the_spec() -> None:
    """Real captions: the image captions of the jawiki excerpt against nouns of real Japanese sentences (UD
    Japanese-GSD, segmented as stage 1 segments), and real English image captions (COCO, tests/data/captions)
    against English words. With its language the matcher finds the Japanese queries inside unspaced captions
    (textnorm alone finds almost none: 32 of 98 captions against 0); on English captions it is the textnorm
    reference, caption by caption."""
    from tests.pairs.test_languages import image_captions, jawiki_captions, ud
    from wit_builder.core import segment

    ja_queries = sorted({w for s in ud("ja_gsd_test300") for w in segment.tokenize(s, "ja") if len(w) >= 2}
                        | {segment.normalize("行政区分"), segment.normalize("最高裁判所")})
    captions = jawiki_captions()
    segmented = QueryMatcher(ja_queries, "ja").match_batch(captions)
    plain = QueryMatcher(ja_queries).match_batch(captions)
    hit, plain_hit = sum(map(bool, segmented)), sum(map(bool, plain))
    assert hit >= 25 and plain_hit <= hit // 10, (hit, plain_hit)  # measured: 32 of 98 captions against 0
    assert "行政 区分" in QueryMatcher(ja_queries, "ja").match("ラオスの行政区分")
    english = image_captions()["en"]
    en_queries = sorted({w for c in english[:80] for w in segment.tokenize(c, "en") if len(w) > 2}
                        | {"young boy", "white dog"})
    assert QueryMatcher(en_queries, "en").match_batch(english) == [reference_match(en_queries, c) for c in english]


def test_word_ngram_lookup_equals_the_automaton_over_every_query_on_long_and_repeated_queries() -> None:
    """The batch path looks queries of up to ``GRAM_WORDS`` words up among word n-grams and finds longer ones with
    an automaton over the long-enough texts; on real LAION alt texts with queries of 1 to 14 words cut from those
    texts and from each other (repeats, overlaps, queries inside queries, texts shorter than the queries), the
    answer equals one automaton scan over every query (``scan_ids``, MetaCLIP's loop)."""
    import random
    from pathlib import Path

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from wit_builder.pairs.matcher import GRAM_WORDS, padded_array, scan_ids

    captions = pq.read_table(Path(__file__).parents[1] / "data" / "laion_captions_10000.parquet").column(
        "caption").to_pylist()
    rng = random.Random(7)
    words = [normalize(c).split() for c in captions]
    queries = {" ".join(w[i:i + n]) for w in words if w for n in range(1, 15) if rng.random() < 0.05
               for i in [rng.randrange(max(1, len(w) - n + 1))] if len(w[i:i + n]) == n}
    queries = sorted(queries)
    assert max(q.count(" ") + 1 for q in queries) > GRAM_WORDS + 3  # long queries take the automaton's path
    texts = captions + [" ".join(q.split()[::-1]) for q in queries[:500]] + ["", "!!!", queries[-1] * 2]
    matcher = QueryMatcher(queries)
    haystacks = padded_array(pa.array(texts, pa.string()))
    found = matcher.match_ids(haystacks)
    expected = scan_ids(matcher._automaton, haystacks.to_pylist())
    for got, want in zip(found, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert len(found[0]) > 5000 and int(found[1].max()) > 10  # many texts matched, some by many queries


@settings(max_examples=200, deadline=None)
@given(queries=st.lists(st.lists(words, min_size=1, max_size=9).map(" ".join).map(normalize).filter(bool),
                        min_size=1, max_size=25),
       text_batch=st.lists(texts(), min_size=1, max_size=12))
def test_match_ids_equal_match_with_queries_longer_than_the_ngrams(queries: list[str], text_batch: list[str]) -> None:
    """Queries of up to 9 words (past ``GRAM_WORDS``): the batch path equals ``match`` (one automaton)."""
    assert_batch_equals_match(queries, text_batch)
