"""MetaCLIP's substring match rule (``--match-rule metaclip``), as MetaCLIP 2 publishes it.

MetaCLIP ("Demystifying CLIP Data", Xu et al., 2023, section 3) and MetaCLIP 2 ("MetaCLIP 2: A Worldwide
Scaling Recipe", Chuang et al., 2025; its released ``metaclip/curation/substr_matching.py``: ``spacing``,
``get_spaced_metadata``, ``is_cjk_or_similar``; ``curate.py`` strips each text first) match an entry of a
language's metadata list against a text as follows:

1. Entries and text are compared **as written**: no case folding, no Unicode normalization ("Classical"
   does not match "classical"; "café" and "cafe\\u0301" differ). The text is stripped of leading and trailing
   whitespace (``str.strip``: no-break and ideographic spaces too).
2. The text is padded with one space on each side; each of ``, . ; : ? !`` and the backtick is wrapped in
   spaces (so "dog." ends in " dog . "); tab, CR and LF become spaces. Nothing else changes: hyphens,
   apostrophes, brackets, quotes and slashes stay glued to their words ("t-shirt" holds no " t ",
   "(dog)" holds no " dog ").
3. An entry is padded with a space on each side whose end character is not CJK, Thai, Lao, Burmese, Khmer,
   Tibetan or punctuation (:func:`is_cjk_or_similar`: the Unicode blocks MetaCLIP 2 lists, ASCII punctuation and
   25 CJK punctuation marks), and matches when the padded entry occurs in the spaced text. So "dog" matches
   as the word " dog ", "猫" anywhere inside "黒猫が", "C++" as " C++" (MetaCLIP v1 padded every entry on both
   sides; the two agree on every entry that begins and ends with a letter or digit outside those scripts).
   An entry that contains one of the wrapped marks ("St. Louis") can never match, as in MetaCLIP.

Together with ``--balance probabilistic`` (per entry, keep each matching text with probability
``min(1, t / count)``; a text is kept when any of its entries' draws keeps it, ``wit_builder.core.balance``)
this reproduces MetaCLIP's curation on the same pool and entry list, up to the random draws.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence

import ahocorasick
import numpy as np
import pyarrow as pa

from wit_builder.pairs.matcher import scan_ids, sorted_entries

PUNCTUATION_TO_WRAP: tuple[str, ...] = (",", ".", ";", ":", "?", "!", "`")
CHARACTERS_TO_SPACE: tuple[str, ...] = ("\t", "\n", "\r")

_SPACING = str.maketrans({p: f" {p} " for p in PUNCTUATION_TO_WRAP} | {c: " " for c in CHARACTERS_TO_SPACE})
# MetaCLIP 2's ``additional_punctuation``: full-width and CJK marks counted as punctuation besides ASCII's.
CJK_PUNCTUATION = frozenset("，。、；：？！“”‘’（）【】《》〈〉「」『』～—")
PUNCTUATION = frozenset(string.punctuation) | CJK_PUNCTUATION
# MetaCLIP 2's ``is_cjk_or_similar`` ranges (inclusive): CJK ideographs, extensions, compatibility ideographs,
# radicals and description characters; then Thai, Lao, Burmese, Khmer, Tibetan.
SPACELESS_RANGES: tuple[tuple[int, int], ...] = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF), (0x2CEB0, 0x2EBEF), (0xF900, 0xFAFF), (0x2E80, 0x2EFF), (0x2F00, 0x2FDF), (0x2FF0, 0x2FFF),
    (0x0E00, 0x0E7F), (0x0E80, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x0F00, 0x0FFF),
)


def spaced(text: str) -> str:
    """The haystack of rule 2: ``" " + text.strip() + " "`` with the punctuation wrapped and tab/CR/LF spaced."""
    return f" {text.strip()} ".translate(_SPACING)


def is_cjk_or_similar(char: str) -> bool:
    """MetaCLIP 2's test of an entry's end character: a spaceless-script character or punctuation (no pad)."""
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in SPACELESS_RANGES) or char in PUNCTUATION


def padded_entry(entry: str) -> str:
    """Rule 3's pattern: ``entry`` with a space before/after it unless that end is CJK-like or punctuation."""
    left = "" if is_cjk_or_similar(entry[0]) else " "
    right = "" if is_cjk_or_similar(entry[-1]) else " "
    return f"{left}{entry}{right}"


def matches(entry: str, text: str) -> bool:
    """Rule 3 for one entry."""
    return padded_entry(entry) in spaced(text)


def validate_entries(entries: Sequence[object], where: str = "entries") -> None:
    """Raise ValueError naming the first entry that is not a non-empty string (entries are used as written)."""
    if not entries:
        raise ValueError(f"{where}: no entries")
    for index, entry in enumerate(entries):
        if not isinstance(entry, str) or not entry:
            raise ValueError(f"{where}: entry #{index} {entry!r} is not a non-empty string")


class MetaClipMatcher:
    """All entries in one Aho-Corasick automaton over their padded forms (rule 3); the same interface as
    ``QueryMatcher``.

    One scan of the spaced text reports every padded entry it contains, overlapping ones included
    (" New York " and " York City " in " New York City "), exactly the entries MetaCLIP's loop finds.
    """

    def __init__(self, entries: Iterable[str]):
        entries = list(entries)
        for entry in entries:
            if not isinstance(entry, str) or not entry:
                raise ValueError(f"entry {entry!r} is not a non-empty string")
        if not entries:
            raise ValueError("no entries to match against")
        self.entries = sorted_entries(entries)  # position i is entry id i
        automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        for index, entry in enumerate(self.entries):
            automaton.add_word(padded_entry(entry), index)
        automaton.make_automaton()
        self._automaton = automaton
        self.num_queries = len(self.entries)  # distinct entries

    def match(self, text: str) -> list[str]:
        """Entries in a raw text, sorted, each once."""
        entries = self.entries
        return [entries[i] for i in sorted({v for _, v in self._automaton.iter(spaced(text))})]

    def match_batch(self, texts: Sequence[str]) -> list[list[str]]:
        """``match`` for each text of a batch, in order."""
        return [self.match(t) for t in texts]

    def haystacks(self, cleaned: pa.Array, raw: pa.Array) -> list[str]:
        """The texts this rule scans for a batch: the captions as read, spaced (rule 2)."""
        return [spaced(t) for t in raw.to_pylist()]

    def match_ids(self, haystacks: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Matched rows, their entry counts and the entry ids (indices of ``entries``), as ``scan_ids``."""
        return scan_ids(self._automaton, haystacks)

    def automaton_stats(self) -> dict[str, int]:
        return dict(self._automaton.get_stats())
