"""MetaCLIP v1's substring match rule, written from its paper and description (``--match-rule metaclip``).

MetaCLIP ("Demystifying CLIP Data", Xu et al., 2023, section 3 and its released curation code's
``substr_matching``) matches an entry of its metadata list against a text as follows:

1. Entries and text are compared **as written**: no case folding, no Unicode normalization ("Classical"
   does not match "classical"; "café" and "cafe\\u0301" differ).
2. The text is padded with one space on each side; each of ``, . ; : ? !`` and the backtick is wrapped in
   spaces (so "dog." ends in " dog . "); tab, CR and LF become spaces. Nothing else changes: hyphens,
   apostrophes, brackets, quotes and slashes stay glued to their words ("t-shirt" holds no " t ",
   "(dog)" holds no " dog ").
3. An entry matches when ``" " + entry + " "`` occurs in the spaced text. The entry itself is not spaced,
   so an entry that contains one of the wrapped marks ("St. Louis") can never match, as in MetaCLIP.

Together with ``--balance probabilistic`` (per entry, keep each matching text with probability
``min(1, t / count)``; a text is kept when any of its entries' draws keeps it, ``wit_builder.core.balance``)
this reproduces MetaCLIP's curation on the same pool and entry list, up to the random draws.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import ahocorasick
import numpy as np
import pyarrow as pa

from wit_builder.pairs.matcher import scan_ids, sorted_entries

PUNCTUATION_TO_WRAP: tuple[str, ...] = (",", ".", ";", ":", "?", "!", "`")
CHARACTERS_TO_SPACE: tuple[str, ...] = ("\t", "\n", "\r")

_SPACING = str.maketrans({p: f" {p} " for p in PUNCTUATION_TO_WRAP} | {c: " " for c in CHARACTERS_TO_SPACE})


def spaced(text: str) -> str:
    """The haystack of rule 2: ``" " + text + " "`` with the punctuation wrapped and tab/CR/LF spaced."""
    return f" {text} ".translate(_SPACING)


def matches(entry: str, text: str) -> bool:
    """Rule 3 for one entry."""
    return f" {entry} " in spaced(text)


def validate_entries(entries: Sequence[object], where: str = "entries") -> None:
    """Raise ValueError naming the first entry that is not a non-empty string (entries are used as written)."""
    if not entries:
        raise ValueError(f"{where}: no entries")
    for index, entry in enumerate(entries):
        if not isinstance(entry, str) or not entry:
            raise ValueError(f"{where}: entry #{index} {entry!r} is not a non-empty string")


class MetaClipMatcher:
    """All entries in one Aho-Corasick automaton over ``" entry "``; the same interface as ``QueryMatcher``.

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
            automaton.add_word(f" {entry} ", index)
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
