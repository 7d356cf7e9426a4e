"""The one tokenization and normalization spec, shared by the query builder (stage 1) and the matcher (stage 2).

A text becomes a sequence of tokens by these rules, applied in order:

1. Unicode NFKC: compatibility forms fold (full-width letters, ligatures, superscript digits, the "ﬁ"
   ligature); accents stay ("café" stays "café").
2. Case: ``str.casefold()``, so "Paris", "PARIS" and "paris" are one query and match each other.
   (MetaCLIP matches case-sensitively; we fold case because alt texts are often in all caps or title case.)
3. Curly apostrophes (U+2018, U+2019, U+02BC) become "'".
4. Tokens are maximal runs of letters, marks and digits (Unicode ``\\w`` minus "_"), optionally joined by
   single inner apostrophes: "don't" and "o'brien" are one token each. Everything else — spaces,
   punctuation, hyphens, slashes, underscores, symbols, emoji — separates tokens and is dropped, so
   "state-of-the-art" is the four tokens "state of the art" and "covid-19" is "covid 19".
5. Digits are kept as tokens ("1990", "19"). The query builder decides which tokens may be queries
   (see ``is_query_token``); the matcher sees every token.

The normalized form of a text is its tokens joined by single spaces. A query matches a text when the
query's normalized form occurs in the text's normalized form on token boundaries, i.e. when
``" " + query + " "`` is a substring of ``" " + text + " "`` (MetaCLIP's space-padded rule, applied to
normalized text). Queries are stored already normalized, so stage 2 never renormalizes them.
"""

from __future__ import annotations

import re
import unicodedata

_APOSTROPHES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'"})
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def tokenize(text: str) -> list[str]:
    """Split ``text`` into normalized tokens (rules 1-5 of the module docstring)."""
    folded = unicodedata.normalize("NFKC", text).casefold().translate(_APOSTROPHES)
    return _TOKEN.findall(folded)


def normalize(text: str) -> str:
    """The normalized form: tokens joined by single spaces ("" when the text has no token)."""
    return " ".join(tokenize(text))


def padded(text: str) -> str:
    """The normalized form with one space on each side, the haystack for token-boundary matching."""
    return f" {normalize(text)} "


def matches(query: str, text: str) -> bool:
    """Reference rule: does normalized ``query`` occur in ``text`` on token boundaries?"""
    return f" {query} " in padded(text)


def is_query_token(token: str) -> bool:
    """May this token stand as (part of) a unigram or bigram query? It must contain a letter.

    Pure numbers ("1990", "2") are frequent in Wikipedia but name no visual concept and would match a
    large share of all alt texts; titles and WordNet entries may still contain digits ("apollo 11").
    """
    return any(ch.isalpha() for ch in token)
