"""The one tokenization and normalization spec, shared by the query builder (stage 1) and the matcher (stage 2).

A text becomes a sequence of tokens by these rules, applied in order:

1. Unicode NFKC: compatibility forms fold (full-width letters, ligatures, superscript digits, the "ﬁ"
   ligature); accents stay ("café" stays "café").
2. Case: ``str.casefold()``, then NFKC again (casefold can decompose, "ǰ" -> "j" + U+030C; the second
   NFKC recomposes, so the result is stable), so "Paris", "PARIS" and "paris" are one query and match
   each other. A dotted "i" (the fold of Turkish "İ", "i" + U+0307 COMBINING DOT ABOVE, one or more)
   becomes a plain "i": the lower-case i already carries its dot, so "İSTANBUL" is "istanbul", like
   "Istanbul" (the dotless "ı" stays itself).
   (MetaCLIP matches case-sensitively; we fold case because alt texts are often in all caps or title
   case — see docs/ARCHITECTURE.md, "Match rule", for the measurement behind this choice.)
3. Curly apostrophes (U+2018, U+2019, U+02BC) become "'"; variation selectors (U+FE00-FE0F,
   U+E0100-E01EF, which pick a glyph, e.g. the emoji form of "❤") are deleted. Invisible format
   characters (category Cf) are deleted, so they never split a word: the soft hyphen U+00AD
   ("Donau\u00addampf\u00adschiff" is "donaudampfschiff"), the word joiner U+2060, the BOM/ZWNBSP
   U+FEFF, the bidi marks and embeddings (U+200E, U+200F, U+061C, U+202A-202E, U+2066-2069), tag
   characters, and ZWNJ U+200C and ZWJ U+200D. The reference is Unicode's word-boundary rules (UAX #29,
   rule WB4: Format, Extend and ZWJ characters never break a word and are ignored by the other rules).
   ZWNJ and ZWJ are part of Persian and Indic spelling ("می\u200cخواهم", Malayalam chillu, Hindi half
   forms) but only choose a joining or conjunct form of the same letters; they are deleted rather than
   kept because writers use them inconsistently (the same Persian word appears with ZWNJ, without it, or
   with a ZWJ) and deleting them on both sides makes those spellings match, as the Unicode Collation
   Algorithm does by making them ignorable (UTS #10, DUCET). The one exception is ZWSP U+200B, which
   UAX #29 does not absorb (its Word_Break is Other) and which Thai, Khmer and Burmese writers use as an
   invisible space: it becomes a space, so it separates tokens.
4. Tokens are maximal runs of letters, combining marks and digits: a token starts with a letter or digit
   (Unicode ``\\w`` minus "_"), and then takes letters, digits and nonspacing or spacing combining marks
   (categories Mn, Mc), so "हिन्दी" (vowel signs and virama), "বাংলা", "ภาษาไทย", "مَدْرَسَة" (harakat)
   and decomposed Latin stay whole words. Inner apostrophes join runs: "don't" and "o'brien" are one
   token each. Everything else — spaces, punctuation, hyphens, slashes, underscores, symbols, emoji,
   enclosing marks (Me, e.g. the keycap U+20E3), a mark with no letter before it — separates tokens and
   is dropped, so "state-of-the-art" is the four tokens "state of the art" and "covid-19" is "covid 19".
5. Digits are kept as tokens ("1990", "19"). The query builder decides which tokens may be queries
   (see ``is_query_token``); the matcher sees every token.

Scripts written without spaces (Han, kana, Thai, Lao, Khmer, Burmese, Tibetan) need one more rule: a token of
rule 4 there is a whole clause. ``wit_builder.core.segment`` splits such tokens into words with ICU and is
otherwise exactly these rules; stages 1 and 2 tokenize text of every language with it.

The normalized form of a text is its tokens joined by single spaces; normalizing it again changes
nothing. A query matches a text when the query's normalized form occurs in the text's normalized form
on token boundaries, i.e. when ``" " + query + " "`` is a substring of ``" " + text + " "`` (MetaCLIP's
space-padded rule, applied to normalized text). Queries are stored already normalized, so stage 2
never renormalizes them. MetaCLIP's own rule, on text as written, is ``wit_builder.pairs.metaclip_rule``.
"""

from __future__ import annotations

import re
import sys
import unicodedata


def _format_characters() -> list[int]:
    """Code points of category Cf (invisible format characters) in the running Python's Unicode database, minus
    ZWSP U+200B (rule 3: UAX #29 gives it Word_Break=Other, a word boundary, so it becomes a space instead)."""
    return [cp for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) == "Cf" and cp != 0x200B]


_FORMAT = _format_characters()
_FOLD = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u02bc": "'", "\u200b": " "}
    | {c: None for c in range(0xFE00, 0xFE10)}
    | {c: None for c in range(0xE0100, 0xE01F0)}
    | {c: None for c in _FORMAT}
)


def _token_continuation_class() -> str:
    """A regex character class body (escaped ranges): letters and digits (``str.isalnum``, which is what
    ``\\w`` means without "_") and combining marks (Mn, Mc), from the running Python's Unicode database, so
    the class and ``unicodedata`` never disagree. One class instead of an alternation: several times faster."""
    ranges: list[list[int]] = []
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        if ch.isalnum() or unicodedata.category(ch) in ("Mn", "Mc"):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
    return "".join(f"\\U{a:08x}-\\U{b:08x}" if a != b else f"\\U{a:08x}" for a, b in ranges)


# A token starts with a letter or digit and continues with letters, digits and combining marks.
# Variation selectors (Mn too) are deleted before (rule 3), so they never reach the class.
_RUN = rf"[^\W_][{_token_continuation_class()}]*"
_TOKEN = re.compile(rf"{_RUN}(?:'{_RUN})*")
TOKEN = _TOKEN  # rule 4 on folded text (core.segment splits these tokens further)
_DOTTED_I = re.compile("i\u0307+")
_TO_FOLD = re.compile(
    "[\u2018\u2019\u02bc\u200b\ufe00-\ufe0f\U000e0100-\U000e01ef" + "".join(f"\\U{c:08x}" for c in _FORMAT) + "]"
)


def fold(text: str) -> str:
    """Rules 1-3 (apostrophes unified, variation selectors and format characters deleted first, so the result is
    stable)."""
    if text.isascii():  # NFKC changes no ASCII text and casefold is lower(); nothing to unify
        return text.lower()
    if _TO_FOLD.search(text):
        text = text.translate(_FOLD)
    folded = unicodedata.normalize("NFKC", text).casefold()
    if "\u0307" in folded:
        folded = _DOTTED_I.sub("i", folded)
    if "\u02bc" in folded:  # again after casefold, which can make U+02BC ("ŉ" -> "ʼn")
        folded = folded.translate(_FOLD)
    return unicodedata.normalize("NFKC", folded)


def tokenize(text: str) -> list[str]:
    """Split ``text`` into normalized tokens (rules 1-5 of the module docstring)."""
    return _TOKEN.findall(fold(text))


def normalize(text: str) -> str:
    """The normalized form: tokens joined by single spaces ("" when the text has no token)."""
    return " ".join(tokenize(text))


def is_query_token(token: str) -> bool:
    """May this token stand as (part of) a unigram or bigram query? It must contain a letter, and a token
    of one character must be a letter of a caseless script (category Lo: "猫", "ก").

    Pure numbers ("1990", "2") are frequent in Wikipedia but name no visual concept and would match a
    large share of all alt texts; titles and WordNet entries may still contain digits ("apollo 11").
    Single letters of alphabets ("a", "t", "i", "x") are noise as queries: on 10,000 real LAION captions
    their extra matches come from "T-Shirt", the article "A", "Men's", size "M" (docs/ARCHITECTURE.md,
    "Match rule"); a query of several tokens may still hold one ("vitamin c").
    """
    if len(token) == 1:
        return unicodedata.category(token) == "Lo"
    return any(ch.isalpha() for ch in token)


def is_phrase_query(tokens: list[str]) -> bool:
    """May these tokens, a title's or a WordNet lemma's, stand as one query? A single token must pass
    ``is_query_token``; a phrase of several needs a letter somewhere ("b 52", "3 d", "vitamin c" stay)."""
    if len(tokens) == 1:
        return is_query_token(tokens[0])
    return any(ch.isalpha() for token in tokens for ch in token)
