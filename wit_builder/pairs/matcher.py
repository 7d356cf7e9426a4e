"""Which queries does an alt text contain? Word n-gram lookups, column-wise, and an Aho-Corasick automaton.

The match rule is the shared spec's (``wit_builder.core.textnorm``): query ``q`` matches text ``t`` when
``" " + q + " "`` occurs in ``" " + normalize(t) + " "``, overlapping queries included (" new york " and
" york city " both match "new york city"). Both sides are words joined by single spaces and the match is on word
boundaries, so a query of n words is in a text exactly when it equals n consecutive words of the text.

A match is a sorted list of small integers, each query's index in the sorted list of distinct queries
(``match_ids``), which the stage carries in Arrow columns; index order is string order, so sorting ids sorts
queries.

The stage matches in batches: ``padded_haystacks``/``padded_array`` build the padded normalized texts of a whole
Arrow column at once (one vectorized pass for ASCII text without apostrophes, the spec's own path for every
other row), and ``QueryMatcher.match_ids`` splits them into words and looks their n-grams up among the queries
of n words (Arrow's ``index_in``, n up to ``GRAM_WORDS``): about 3x fewer CPU-seconds than the automaton scan
MetaCLIP runs (``scan_ids``, one Python iteration per match; ``make bench-match``). Queries of more words are
found by an automaton over the texts that have that many words. One text at a time (``match``,
``match_normalized``) uses one automaton over every query, the reference the tests hold the batch path to.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import itemgetter

import ahocorasick
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wit_builder.core import segment
from wit_builder.core.textnorm import normalize

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


def padded_haystacks(texts: pa.Array, lang: str | None = None) -> list[str]:
    """``" " + fast_normalize(t) + " "`` for every string of ``texts`` (no nulls), in order.

    Rows of ASCII text without an apostrophe are normalized column-wise (lower-case, every run of characters
    other than ASCII letters and digits one space: ``fast_normalize``'s byte path); the others row by row, by
    ``wit_builder.core.segment.normalize`` with ``lang`` when a language is given (text of a spaceless script
    split into words as stage 1 split its queries; the same as ``textnorm`` for every other text).
    """
    return padded_array(texts, lang).to_pylist()


def padded_array(texts: pa.Array, lang: str | None = None) -> pa.Array:
    """``padded_haystacks`` as a string array."""
    simple = pc.and_(pc.string_is_ascii(texts), pc.invert(pc.match_substring(texts, "'")))
    tokens = pc.utf8_trim(pc.replace_substring_regex(pc.ascii_lower(texts), "[^a-z0-9]+", " "), " ")
    haystacks = pc.binary_join_element_wise(" ", tokens, " ", "")
    others = pc.invert(simple)
    if pc.any(others).as_py():
        rows = pc.filter(texts, others).to_pylist()
        spec = [f" {normalize(t) if lang is None else segment.normalize(t, lang)} " for t in rows]
        haystacks = pc.replace_with_mask(haystacks, others, pa.array(spec, pa.string()))
    return haystacks


def scan_ids(automaton: ahocorasick.Automaton, haystacks: Sequence[str]) -> tuple[np.ndarray, np.ndarray,
                                                                                     np.ndarray]:
    """One automaton scan per haystack -> (matched row indices, their counts of ids, the ids row after row).

    Each row's ids are distinct and sorted; rows with no hit are left out. All three are int64 arrays.
    """
    scan, value = automaton.iter, itemgetter(1)  # iter yields (end index, stored id)
    rows: list[int] = []
    lengths: list[int] = []
    flat: list[int] = []
    add_row, add_length, add_ids = rows.append, lengths.append, flat.extend  # bound once: this loop is per text
    for i, haystack in enumerate(haystacks):
        found = set(map(value, scan(haystack)))
        if found:
            add_row(i)
            add_length(len(found))
            add_ids(sorted(found))
    return np.array(rows, np.int64), np.array(lengths, np.int64), np.array(flat, np.int64)


GRAM_WORDS = 6  # queries of up to this many words are looked up among word n-grams; longer ones by an automaton


def _automaton(entries: Iterable[tuple[str, int]]) -> ahocorasick.Automaton:
    """An automaton of the space-padded entries, each storing its id."""
    automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
    for query, index in entries:
        automaton.add_word(f" {query} ", index)
    automaton.make_automaton()
    return automaton


def sorted_entries_array(entries: pa.Array) -> pa.Array:
    """``sorted_entries`` column-wise: the distinct strings of ``entries`` (no nulls) in code point order (Arrow
    sorts by UTF-8 bytes, which is code point order)."""
    distinct = pc.unique(entries)
    return distinct.take(pc.sort_indices(distinct))


def sorted_entries(entries: Iterable[str]) -> list[str]:
    """The distinct entries in code point order: position i is query id i of every matcher."""
    return sorted(set(entries))


class QueryMatcher:
    """All queries in one automaton; ``match`` returns the sorted distinct queries a text contains.

    ``entries`` is the sorted list of distinct queries; ``match_ids`` returns positions in it.

    Args:
        queries: normalized queries.
        lang: the language of stage 1 queries (a Wikipedia code): stage 1 segments every query
            (``wit_builder.core.segment``: ``東京 タワー``), so every text is segmented the same way before it is
            matched, in ``match``, ``match_batch`` and ``haystacks`` alike (``QueryMatcher(q, "ja").match
            ("東京タワーの夜景")`` finds ``東京 タワー``). Text with no character of a spaceless script normalizes as
            under ``textnorm`` (English is unchanged). None: ``textnorm`` alone, the shared spec's reference rule
            (``tests/references.py``), under which a query of a spaceless script matches only where the text
            itself puts spaces or punctuation around its words.
    """

    def __init__(self, queries: Iterable[str] | pa.Array, lang: str | None = None):
        given = queries if isinstance(queries, pa.Array) else pa.array(list(queries), pa.string())
        self.lang = lang  # texts are segmented as stage 1's queries of this language (None: textnorm only)
        bad = pc.or_(pc.or_(pc.equal(pc.binary_length(given), 0), pc.not_equal(pc.utf8_trim_whitespace(given), given)),
                     pc.match_substring(given, "  ")).fill_null(True)
        if pc.any(bad).as_py():
            query = given[int(np.flatnonzero(bad.to_numpy(zero_copy_only=False))[0])].as_py()
            raise ValueError(f"query {query!r} is not normalized (see wit_builder.core.textnorm)")
        if not len(given):
            raise ValueError("no queries to match against")
        column = sorted_entries_array(given)
        self._column = column
        self._entries: list[str] | None = None
        self.num_queries = len(column)  # distinct queries
        words = pc.add(pc.count_substring(column, " "), 1).to_numpy(zero_copy_only=False)
        # Queries of up to GRAM_WORDS words: looked up among each text's word n-grams; longer ones: an automaton.
        self._grams = {n: (column.filter(pa.array(words == n)), np.flatnonzero(words == n))
                       for n in range(1, GRAM_WORDS + 1) if (words == n).any()}
        longer = np.flatnonzero(words > GRAM_WORDS)
        self._longer: ahocorasick.Automaton | None = None
        if len(longer):
            self._longer = _automaton(zip(column.take(pa.array(longer)).to_pylist(), longer.tolist(), strict=True))
        self._automaton_all: ahocorasick.Automaton | None = None  # for one text at a time, built when first asked

    @property
    def entries(self) -> list[str]:
        """The sorted distinct queries (query id i is element i), as Python strings when first asked."""
        if self._entries is None:
            self._entries = self._column.to_pylist()
        return self._entries

    @property
    def _automaton(self) -> ahocorasick.Automaton:
        """Every query in one automaton (``match_normalized``: one text at a time)."""
        if self._automaton_all is None:
            self._automaton_all = _automaton(zip(self.entries, range(self.num_queries), strict=True))
        return self._automaton_all

    def match_normalized(self, normalized_text: str) -> list[str]:
        """Queries in an already normalized text, sorted, each once."""
        entries = self.entries
        return [entries[i] for i in sorted({v for _, v in self._automaton.iter(f" {normalized_text} ")})]

    def normalize_text(self, text: str) -> str:
        """``text`` as this matcher compares it: ``core.segment.normalize`` when built with a ``lang``, else
        ``textnorm.normalize`` (both by ``fast_normalize`` for ASCII text without an apostrophe, where they agree)."""
        if self.lang is None or text.isascii() and "'" not in text:
            return fast_normalize(text)
        return segment.normalize(text, self.lang)

    def match(self, text: str) -> list[str]:
        """Queries in a raw text (normalized here first, segmented when the matcher has a ``lang``)."""
        return self.match_normalized(self.normalize_text(text))

    def match_batch(self, texts: Sequence[str]) -> list[list[str]]:
        """``match`` for each text of a batch, in order."""
        return [self.match_normalized(self.normalize_text(t)) for t in texts]

    def haystacks(self, cleaned: pa.Array, raw: pa.Array) -> pa.Array:
        """The texts this rule scans for a batch: the padded normalized (segmented) cleaned captions."""
        return padded_array(cleaned, self.lang)

    def match_ids(self, haystacks: Sequence[str] | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``scan_ids``'s answer over ``haystacks`` (from ``haystacks``: padded normalized texts): (matched rows,
        their counts of ids, the ids row after row, each row's sorted and distinct); ids index ``entries``.

        Column-wise: a query of n words is in a text exactly when it equals n consecutive words of it (both are
        words joined by single spaces, and the match is on word boundaries), so each text's words and word
        n-grams (n up to ``GRAM_WORDS``) are built by Arrow and looked up among the queries of n words
        (``index_in``); queries of more words are found by an automaton over the texts that have that many.
        The tests hold this equal to the automaton over every query (``scan_ids``)."""
        column = haystacks if isinstance(haystacks, pa.Array) else pa.array(list(haystacks), pa.string())
        if not len(column):
            empty = np.zeros(0, np.int64)
            return empty, empty, empty
        split = pc.split_pattern(pc.utf8_trim(column, " "), " ")
        lengths = pc.list_value_length(split).to_numpy(zero_copy_only=False).astype(np.int64)
        words = pc.list_flatten(split)
        row_of = np.repeat(np.arange(len(column)), lengths)
        rows: list[np.ndarray] = []
        ids: list[np.ndarray] = []
        for n, (queries, query_ids) in self._grams.items():
            if len(words) < n:
                break
            starts = len(words) - n + 1
            grams = words.slice(0, starts) if n == 1 else pc.binary_join_element_wise(
                *(words.slice(k, starts) for k in range(n)), " ")
            found = pc.index_in(grams, value_set=queries).fill_null(-1).to_numpy(zero_copy_only=False)
            hit = found >= 0
            if n > 1:  # an n-gram within one text only
                hit &= row_of[:starts] == row_of[n - 1:]
            rows.append(row_of[:starts][hit])
            ids.append(query_ids[found[hit].astype(np.int64)])
        if self._longer is not None:
            long_rows = np.flatnonzero(lengths > GRAM_WORDS)
            if len(long_rows):
                local, counts, found_ids = scan_ids(self._longer, column.take(pa.array(long_rows)).to_pylist())
                rows.append(np.repeat(long_rows[local], counts))
                ids.append(found_ids)
        keys = np.concatenate([np.zeros(0, np.int64), *rows]) * self.num_queries + np.concatenate(
            [np.zeros(0, np.int64), *ids])
        if not len(keys):
            return keys, keys, keys
        keys.sort()  # by row, then id (a sort: numpy's hashing unique is several times slower here)
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]]  # a query found twice in a text counts once
        matched_rows, flat_ids = np.divmod(keys, self.num_queries)
        first = np.flatnonzero(np.r_[True, matched_rows[1:] != matched_rows[:-1]])
        counts = np.diff(np.r_[first, len(matched_rows)])
        return matched_rows[first], counts.astype(np.int64), flat_ids

    def automaton_stats(self) -> dict[str, int]:
        return dict(self._automaton.get_stats())


def validate_queries(queries: Sequence[object], where: str = "queries") -> None:
    """Raise ValueError naming the first query that is empty or not in the shared spec's normalized form."""
    if not queries:
        raise ValueError(f"{where}: no queries")
    try:  # the normalized form of every query at once (padded_array is the spec, column-wise where exact)
        column = pa.array(queries, pa.string())
        good = pc.equal(padded_array(column), pc.binary_join_element_wise(" ", column, " ", ""))
        if pc.all(good).as_py() and column.null_count == 0 and pc.all(pc.greater(pc.binary_length(column), 0)).as_py():
            return
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass  # not all strings: the loop below names the first bad one
    for index, query in enumerate(queries):
        if not isinstance(query, str) or not query or fast_normalize(query) != query:
            raise ValueError(f"{where}: query #{index} {query!r} is not normalized (wit_builder.core.textnorm); "
                             "rebuild it with 'wit build-queries'")
