"""``--match-rule metaclip``: MetaCLIP 2's rule, held to a reference written again from its published code
(``tests.references.reference_metaclip2_match``) on real LAION captions (img2dataset's public test parquet) with
punctuation, case and Unicode, on CJK and Thai text, and on random text."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.references import reference_metaclip2_match
from wit_builder.pairs.match_rules import make_matcher
from wit_builder.pairs.metaclip_rule import MetaClipMatcher, matches, padded_entry, spaced

CAPTIONS = Path(__file__).parents[1] / "data" / "laion_captions_10000.parquet"


metaclip_reference = reference_metaclip2_match  # MetaCLIP 2's published code, loop for loop (tests/references.py)


@pytest.fixture(scope="module")
def captions() -> list[str]:
    return pq.read_table(CAPTIONS).column("caption").to_pylist()


# Real captions of the parquet, each with what MetaCLIP's rule does and does not match in it.
REAL = [
    ("Classical Masterpieces: Xerses & More, Vol. 8 by Various Artists",
     ["Classical", "Masterpieces", "Vol", "8", "by", "Xerses", "More", "Various Artists", "&", "Xerses & More"],
     ["classical", "Masterpieces:", "Vol.", "More, Vol", "Vol. 8"]),  # ":", "," and "." are wrapped in spaces
    ("Vector Giant Squid Kid's Dark T-Shirt",
     ["Kid's", "T-Shirt", "Giant Squid"], ["t", "T", "Shirt", "Kid", "shirt"]),  # hyphen, apostrophe stay
    ("Carhartt Swell Bermuda Colfax Shorts (blue rinsed)",
     ["Shorts", "Bermuda", "(blue rinsed)"], ["blue", "rinsed"]),  # brackets stay glued: "(blue" is a word
    ("Dig at Malcolm X home turns up evidence of 1700s\xa0settlement",
     ["Malcolm X", "1700s\xa0settlement"], ["settlement", "1700s"]),  # no-break space is not a space
    ("Mid heel point-toe ankle boots in black suede Pura López",
     ["López", "black suede"], ["Lopez", "lópez", "toe"]),  # accents as written, no case folding
]


@pytest.mark.parametrize(("caption", "hits", "misses"), REAL)
def test_real_captions(caption: str, hits: list[str], misses: list[str], captions: list[str]) -> None:
    assert caption in captions  # the caption is from the real file
    matcher = MetaClipMatcher(hits + misses)
    assert matcher.match(caption) == sorted(hits) == metaclip_reference(hits + misses, caption)
    assert all(not matches(m, caption) for m in misses)


def test_spacing_of_punctuation_and_controls() -> None:
    assert spaced("A dog.\tIn (the) park, t-shirt!\r\n") == " A dog .  In (the) park ,  t-shirt !  "  # stripped
    assert MetaClipMatcher(["dog", "park", "In", "the", "t", "St. Louis"]).match(
        "A dog.\tIn (the) park, t-shirt! St. Louis") == ["In", "dog", "park"]  # "St. Louis" never matches


def test_nfd_and_nfc_differ_as_written() -> None:
    assert MetaClipMatcher(["café"]).match("Cafe\u0301 café") == ["café"]
    assert MetaClipMatcher(["cafe\u0301"]).match("café") == []


def test_all_real_captions_equal_the_reference(captions: list[str]) -> None:
    # Entries: words and word pairs of the captions as written (case and Unicode kept), plus lower-cased forms.
    words = [w for c in captions[:1000] for w in c.split()]
    entries = sorted(set(words[::7]) | {w.lower() for w in words[::11]}
                     | {" ".join(p) for p in zip(words[::13], words[1::13], strict=False)})
    matcher = make_matcher(entries, "metaclip")
    for caption in captions[:4000]:  # the brute-force reference is slow; 4,000 real captions
        assert matcher.match(caption) == metaclip_reference(entries, caption), caption


ALPHABET = [*"aAbB é,.;:?!`\t\n\r-'()\"/&\xa0\u3000猫犬の。、「」แมวກ", "\u0301", "İ", "ß"]
texts = st.text(alphabet=st.sampled_from(ALPHABET), max_size=40)


def test_entries_are_padded_only_on_spaced_sides() -> None:
    # MetaCLIP 2's get_spaced_metadata: no pad next to a CJK/Thai/Lao/Burmese/Khmer/Tibetan end or punctuation
    assert padded_entry("dog") == " dog "
    assert padded_entry("猫") == "猫"
    assert padded_entry("แมว") == "แมว"
    assert padded_entry("C++") == " C++"
    assert padded_entry("(dog)") == "(dog)"
    assert padded_entry("iPhone手机") == " iPhone手机"
    assert padded_entry("「猫」") == "「猫」"
    assert padded_entry("カメラ") == " カメラ "  # katakana is outside MetaCLIP 2's ranges: padded like Latin


def test_spaceless_scripts_match_inside_words() -> None:
    matcher = MetaClipMatcher(["猫", "黒猫", "แมว", "dog", "カメラ", "C++"])
    assert matcher.match("黒猫が寝ている") == ["猫", "黒猫"]
    assert matcher.match("แมวสีดำนอนอยู่") == ["แมว"]
    assert matcher.match("デジタルカメラ") == []  # katakana entries need spaces, as in MetaCLIP 2
    assert matcher.match("\xa0dog\u3000") == ["dog"]  # stripped first (curate.py)
    assert matcher.match("C++ book") == ["C++"]
    assert matcher.match("C++book") == ["C++"]  # no pad after the punctuation end


@settings(max_examples=400, deadline=None)
@given(texts, st.lists(texts.filter(bool), min_size=1, max_size=10))
def test_automaton_equals_reference_on_random_text(text: str, entries: list[str]) -> None:
    entries = entries + text.split()[:3]  # some entries that occur
    assert MetaClipMatcher(entries).match(text) == metaclip_reference(entries, text)


@settings(max_examples=200, deadline=None)
@given(st.lists(texts, min_size=1, max_size=10), st.lists(texts.filter(bool), min_size=1, max_size=10))
def test_batch_ids_equal_match_on_the_raw_caption(batch: list[str], entries: list[str]) -> None:
    """The stage's batch path scans the caption as read (``raw``), never the cleaned one."""
    import pyarrow as pa

    entries = entries + [w for t in batch for w in t.split()][:5]
    matcher = MetaClipMatcher(entries)
    raw = pa.array(batch, pa.string())
    cleaned = pa.array([" ".join(t.split()) or "x" for t in batch], pa.string())  # what cleaning would give
    rows, lengths, ids = matcher.match_ids(matcher.haystacks(cleaned, raw))
    expected = [(i, metaclip_reference(entries, t)) for i, t in enumerate(batch) if metaclip_reference(entries, t)]
    assert rows.tolist() == [i for i, _ in expected]
    assert lengths.tolist() == [len(found) for _, found in expected]
    assert [matcher.entries[i] for i in ids.tolist()] == [e for _, found in expected for e in found]
