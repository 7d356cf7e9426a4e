"""The shared tokenization spec (wit_builder.core.textnorm) on real scripts, and against a reference written
character by character from its docstring (Unicode categories, no regular expression)."""

from __future__ import annotations

import sys
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wit_builder.core import segment
from wit_builder.core.textnorm import is_query_token, normalize, tokenize
from wit_builder.pairs.matcher import QueryMatcher, fast_normalize

VARIATION_SELECTORS = {*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)}
APOSTROPHES = {"\u2018": "'", "\u2019": "'", "\u02bc": "'"}


def reference_fold(text: str) -> str:
    """Rules 1-3 written out step by step (format characters: category Cf deleted, ZWSP a space)."""
    def unify(s: str) -> str:
        return "".join(
            " " if c == "\u200b" else APOSTROPHES.get(c, c)
            for c in s
            if ord(c) not in VARIATION_SELECTORS and (c == "\u200b" or unicodedata.category(c) != "Cf")
        )

    s = unicodedata.normalize("NFKC", unify(text)).casefold()
    out: list[str] = []
    for c in s:  # drop every U+0307 that follows an "i" (directly or after other such dots)
        if c == "\u0307" and out and out[-1] == "i":
            continue
        out.append(c)
    return unicodedata.normalize("NFKC", unify("".join(out)))


def _starts(c: str) -> bool:  # a letter or digit: Unicode \w minus "_" (str.isalnum)
    return c.isalnum()


def _continues(c: str) -> bool:
    return c.isalnum() or unicodedata.category(c) in ("Mn", "Mc")


def reference_tokenize(text: str) -> list[str]:
    """Rule 4 as a scan: runs start at a letter/digit, take letters, digits and Mn/Mc marks; an apostrophe
    between two runs joins them."""
    s = reference_fold(text)
    tokens: list[str] = []
    i = 0
    while i < len(s):
        if not _starts(s[i]):
            i += 1
            continue
        j = i + 1
        while True:
            while j < len(s) and _continues(s[j]):
                j += 1
            if j + 1 < len(s) and s[j] == "'" and _starts(s[j + 1]):
                j += 2
                continue
            break
        tokens.append(s[i:j])
        i = j
    return tokens


# Real words and phrases of the scripts the issue names (Wikipedia article titles and common words).
CASES = [
    ("İSTANBUL", ["istanbul"]),
    ("İzmir ve Istanbul", ["izmir", "ve", "istanbul"]),
    ("ıspanak", ["ıspanak"]),  # dotless ı stays
    ("हिन्दी भाषा", ["हिन्दी", "भाषा"]),  # vowel signs (Mc/Mn) and virama stay inside the word
    ("महात्मा गांधी", ["महात्मा", "गांधी"]),
    ("বাংলা ভাষা", ["বাংলা", "ভাষা"]),
    ("ภาษาไทย กรุงเทพมหานคร", ["ภาษาไทย", "กรุงเทพมหานคร"]),  # Thai: no spaces inside a phrase
    ("مَدْرَسَة عَرَبِيَّة", ["مَدْرَسَة", "عَرَبِيَّة"]),  # harakat
    ("Tiếng Việt, Hà Nội", ["tiếng", "việt", "hà", "nội"]),
    ("한국어 위키백과", ["한국어", "위키백과"]),
    ("\u1112\u1161\u11ab\u1100\u116e\u11a8", ["한국"]),  # conjoining jamo compose (NFKC)
    ("Cafe\u0301 Noe\u0308l", ["café", "noël"]),  # decomposed Latin composes
    ("x\u0304 and q\u0307", ["x\u0304", "and", "q\u0307"]),  # no precomposed form: the mark stays in the token
    ("I ❤️ NY 👍🏽 1️⃣", ["i", "ny", "1"]),  # emoji, skin tone, variation selector, keycap separate
    ("\u0301alone ̈", ["alone"]),  # a mark with no letter before it is no token
    ("don\u2019t o'brien", ["don't", "o'brien"]),
    ("state-of-the-art COVID-19", ["state", "of", "the", "art", "covid", "19"]),
]


@pytest.mark.parametrize(("text", "tokens"), CASES)
def test_real_scripts_keep_their_marks(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens
    assert reference_tokenize(text) == tokens
    assert fast_normalize(text) == normalize(text) == " ".join(tokens)


def test_no_single_letter_fragments_from_marked_words() -> None:
    # The old pattern split at every mark: "İSTANBUL" -> "i", "stanbul" and Hindi into fragments that
    # became one-letter queries matching everything in stage 2.
    hindi = "भारत गणराज्य दक्षिण एशिया में स्थित भारतीय उपमहाद्वीप का सबसे बड़ा देश है"
    assert all(len(t) > 1 for t in tokenize(hindi) if is_query_token(t))
    assert QueryMatcher(["i"]).match("İSTANBUL") == []
    assert QueryMatcher(["istanbul"]).match("İSTANBUL HAVALİMANI") == ["istanbul"]
    assert QueryMatcher(["भारत"]).match("भारतीय") == []  # a prefix is not a token
    assert QueryMatcher(["भारत"]).match("भारत देश") == ["भारत"]


# Invisible format characters (issue 20): UAX #29's WB4 (Format, Extend, ZWJ never break a word) is the
# reference; ZWSP (Word_Break=Other) is a boundary. Real words: German compounds hyphenated for line breaks,
# Persian and Hindi spellings with ZWNJ/ZWJ, a BOM and bidi marks around a Hebrew/Arabic title.
FORMAT_CASES = [
    ("Donau\u00addampf\u00adschiff\u00adfahrts\u00adgesell\u00adschaft", ["donaudampfschifffahrtsgesellschaft"]),
    ("Rind\u2060fleisch", ["rindfleisch"]),  # word joiner
    ("\ufeffWikipedia", ["wikipedia"]),  # BOM at the start of a file
    ("\u200fויקיפדיה\u200e (Hebrew)", ["ויקיפדיה", "hebrew"]),  # RLM/LRM around a title
    ("\u202bالعربية\u202c \u2067فارسی\u2069", ["العربية", "فارسی"]),  # embeddings and isolates
    ("می\u200cخواهم کتاب\u200cها", ["میخواهم", "کتابها"]),  # Persian ZWNJ: one word, spelled without it
    ("क्\u200dष", ["क्ष"]),  # Devanagari ZWJ (half form): the same letters
    ("ภาษา\u200bไทย", ["ภาษา", "ไทย"]),  # ZWSP: an invisible space, a boundary
    ("co\u00adoperate don\u00ad't", ["cooperate", "don't"]),
]


@pytest.mark.parametrize(("text", "tokens"), FORMAT_CASES)
def test_format_characters_follow_uax29_wb4(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens
    assert reference_tokenize(text) == tokens
    assert normalize(normalize(text)) == normalize(text)


def test_persian_spellings_with_and_without_zwnj_match_each_other() -> None:
    assert QueryMatcher([normalize("کتاب\u200cها")]).match("کتابها و دفترها") == ["کتابها"]
    assert QueryMatcher([normalize("کتابها")]).match("این کتاب\u200cها") == ["کتابها"]
    assert QueryMatcher(["donaudampfschiff"]).match("Die Donau\u00addampf\u00adschiff fährt") == ["donaudampfschiff"]


# Random Unicode, weighted towards what breaks tokenizers: marks, letters of many scripts, apostrophes,
# dotted capitals, variation selectors, emoji, format characters.
SPECIALS = (
    "İi\u0307'\u2019\u02bc\ufe0f\u20e3\u0301\u093e\u094d\u0e31\u064e ŉǰß-_ 👍🏽"
    "\u00ad\u200b\u200c\u200d\u2060\ufeff\u200e"
)
chars = st.one_of(
    st.characters(),
    st.characters(categories=("Mn", "Mc", "Me", "Lo", "Lu", "Ll", "Nd")),
    st.sampled_from(SPECIALS),
)
unicode_texts = st.text(alphabet=chars, max_size=40)


@settings(max_examples=600, deadline=None)
@given(unicode_texts)
def test_tokenize_equals_reference(text: str) -> None:
    assert tokenize(text) == reference_tokenize(text)
    assert normalize(normalize(text)) == normalize(text)  # stable: a stored query revalidates


@settings(max_examples=600, deadline=None)
@given(st.one_of(unicode_texts, st.text(alphabet=st.characters(max_codepoint=127))))
def test_ascii_fast_path_equals_unicode_path(text: str) -> None:
    assert fast_normalize(text) == " ".join(reference_tokenize(text))


@settings(max_examples=300, deadline=None)
@given(unicode_texts, st.lists(unicode_texts, min_size=1, max_size=8))
def test_matcher_equals_reference_on_random_unicode(text: str, raw_queries: list[str]) -> None:
    queries = [q for q in (" ".join(reference_tokenize(r)) for r in raw_queries) if q]
    # Queries also taken from the text itself, so that matches happen.
    tokens = reference_tokenize(text)
    queries += [" ".join(tokens[i : i + 2]) for i in range(0, len(tokens), 2)]
    if not queries:
        return
    padded = " " + " ".join(tokens) + " "
    expected = sorted({q for q in queries if f" {q} " in padded})
    assert QueryMatcher(queries).match(text) == expected


def test_every_single_code_point_is_stable() -> None:
    # Exhaustive over the code space (one pass, about a second): tokenizing the normalized form of any
    # character next to a letter, a mark or a dotted capital gives the same form.
    for cp in range(sys.maxunicode + 1):
        c = chr(cp)
        if unicodedata.category(c) in ("Cs", "Cn"):
            continue
        for text in ("a" + c + "\u0301", "İ" + c):
            n = normalize(text)
            assert normalize(n) == n, (hex(cp), text)


@settings(max_examples=300, deadline=None)
@given(unicode_texts, unicode_texts)
def test_stage_1_queries_are_matched_by_stage_2_in_their_own_text(line_a: str, line_b: str) -> None:
    """Stages 1 and 2 agree: every unigram and bigram stage 1 counts in a text is a valid stored query
    (normalized, so stage 2 accepts it) that stage 2's matcher finds in that same text, and no other."""
    from collections import Counter

    from wit_builder.pairs.matcher import validate_queries
    from wit_builder.queries.selection import count_ngrams, title_query, wordnet_query

    text = f"{line_a}\n{line_b}"
    unigrams: Counter[str] = Counter()
    bigrams: Counter[str] = Counter()
    count_ngrams(text, unigrams, bigrams)
    queries = [q for q in [*unigrams, *bigrams] if all(is_query_token(t) for t in q.split())]
    for phrase in (title_query(line_a), wordnet_query(line_b.replace(" ", "_"))):
        if phrase is not None:
            queries.append(phrase)
    if not queries:
        return
    validate_queries(queries)
    matcher = QueryMatcher(queries)
    # stage 2 normalizes captions as stage 1 tokenized the text: spaceless scripts segmented (core.segment)
    found = set(matcher.match_normalized(segment.normalize(line_a))) | set(
        matcher.match_normalized(segment.normalize(line_b)))
    assert set(unigrams) | set(bigrams) >= found - {title_query(line_a), wordnet_query(line_b.replace(" ", "_"))}
    assert found >= {q for q in queries if q in unigrams or q in bigrams}


def test_one_letter_tokens_are_no_queries_but_phrases_keep_them() -> None:
    from wit_builder.queries.selection import title_query, wordnet_query

    assert [t for t in ("a", "t", "i", "x", "é", "猫", "ก", "ab", "1990", "b52") if is_query_token(t)] == [
        "猫", "ก", "ab", "b52"]
    assert title_query("C (programming language)") is None  # the title phrase is "C"
    assert title_query("X") is None and wordnet_query("t") is None
    assert title_query("Vitamin C") == "vitamin c"
    assert (wordnet_query("B-52"), wordnet_query("3-D"), wordnet_query("vitamin_C")) == ("b 52", "3 d", "vitamin c")
