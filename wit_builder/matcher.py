"""Which queries does an alt text contain? One Aho-Corasick automaton over every query, built once.

The match rule is the shared spec's (``wit_builder.textnorm``): query ``q`` matches text ``t`` when
``" " + q + " "`` occurs in ``" " + normalize(t) + " "``. The automaton holds the space-padded queries,
so one left-to-right scan of the padded text finds every query on token boundaries, overlapping ones
included (" new york " and " york city " both match "new york city").

The automaton stores only each key's length (``STORE_LENGTH``): a hit's query is cut back out of the
text, so the 500k query strings are not kept a second time as Python objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import ahocorasick

from wit_builder.textnorm import normalize

# ASCII bytes that separate tokens under the spec: everything but letters, digits and the apostrophe.
_ASCII_SEPARATORS = bytes(
    c if chr(c).isascii() and (chr(c).isalnum() or c == ord("'")) else ord(" ") for c in range(256)
)


def fast_normalize(text: str) -> str:
    """``textnorm.normalize``, with a byte-level fast path for the common ASCII text without apostrophes.

    For such text NFKC changes nothing, casefold is lower(), and tokens are the runs of ASCII letters and
    digits, so one table translation and a split give the same tokens several times faster than the
    Unicode regex. Everything else takes the spec's own path. (The tests hold the two equal.)
    """
    if text.isascii() and "'" not in text:
        return b" ".join(text.encode().lower().translate(_ASCII_SEPARATORS).split()).decode()
    return normalize(text)


class QueryMatcher:
    """All queries in one automaton; ``match`` returns the sorted distinct queries a text contains."""

    def __init__(self, queries: Iterable[str]):
        automaton = ahocorasick.Automaton(ahocorasick.STORE_LENGTH)
        count = 0
        for query in queries:
            if not query or query != query.strip() or "  " in query:
                raise ValueError(f"query {query!r} is not normalized (see wit_builder.textnorm)")
            automaton.add_word(f" {query} ")
            count += 1
        if count == 0:
            raise ValueError("no queries to match against")
        automaton.make_automaton()
        self._automaton = automaton
        self.num_queries = len(automaton)  # distinct queries

    def match_normalized(self, normalized_text: str) -> list[str]:
        """Queries in an already normalized text, sorted, each once."""
        haystack = f" {normalized_text} "
        # end is the index of a hit's trailing space; length counts both padding spaces.
        found = {haystack[end - length + 2 : end] for end, length in self._automaton.iter(haystack)}
        return sorted(found)

    def match(self, text: str) -> list[str]:
        """Queries in a raw text (normalized here first)."""
        return self.match_normalized(fast_normalize(text))

    def match_batch(self, texts: Sequence[str]) -> list[list[str]]:
        """``match`` for each text of a batch, in order."""
        return [self.match_normalized(fast_normalize(t)) for t in texts]

    def automaton_stats(self) -> dict[str, int]:
        return dict(self._automaton.get_stats())


def validate_queries(queries: Sequence[object], where: str = "queries") -> None:
    """Raise ValueError naming the first query that is empty or not in the shared spec's normalized form."""
    if not queries:
        raise ValueError(f"{where}: no queries")
    for index, query in enumerate(queries):
        if not isinstance(query, str) or not query or normalize(query) != query:
            raise ValueError(f"{where}: query #{index} {query!r} is not normalized (wit_builder.textnorm); "
                             "rebuild it with 'wit build-queries'")


def reference_match(queries: Iterable[str], text: str) -> list[str]:
    """Brute force over every query with the spec's rule: the oracle the tests hold the automaton to."""
    haystack = f" {normalize(text)} "
    return sorted({q for q in queries if f" {q} " in haystack})
