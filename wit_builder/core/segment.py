"""Word segmentation for every language: the tokens of stage 1's queries and of stage 2's captions.

``textnorm`` finds words by spaces and punctuation, which is all a language written with spaces needs. Han
(Chinese, Japanese kanji), Hiragana, Katakana, Thai, Lao, Khmer, Myanmar (Burmese) and Tibetan are written
without spaces between words, so a ``textnorm`` token there is a whole clause (``犬の顔の折り紙``). Here such
tokens are split into words by ICU's word break iterator (Unicode UAX #29 word boundaries with ICU's
dictionaries: the CJ dictionary for Han/Hiragana/Katakana, dictionaries for Thai, Lao, Khmer and Burmese),
from the ``pyicu-wheels`` wheel, which bundles ICU's libraries and data (nothing downloads at run time).

ICU was chosen by measurement (``benchmarks/segmenters.py``, docs/ARCHITECTURE.md "Word segmentation"): one
engine covers every spaceless script; on real treebank text it keeps Japanese nouns whole as often as MeCab
with UniDic (0.651 vs 0.648 of the long-unit nouns), agrees with the Chinese gold words as well as jieba
(boundary F1 0.906 vs 0.914) and with the Thai ones better than PyThaiNLP's newmm (0.903 vs 0.872); ICU alone
is 3.5-14 times faster than those three (this module, with its folding and checks, is faster than jieba and
newmm and a little slower than MeCab with a cold word cache).

The rules, applied in order (``tokenize``):

1. ``textnorm.fold`` (NFKC, casefold, apostrophes, format characters: rules 1-3 of ``textnorm``), then
   ``textnorm``'s token rule (rule 4): so a text with no character of a spaceless script gives exactly
   ``textnorm.tokenize`` (English is unchanged) and full-width Latin and digits are already ASCII.
2. A token holding a character of a spaceless script (``needs_segmentation``) is split at ICU's word
   boundaries; each piece keeps only what ``textnorm``'s token rule keeps (ICU returns an apostrophe as a
   piece of its own: ``北京's`` gives ``北京 s``). Mixed text splits where the script changes:
   ``東京タワーとtokyo`` gives ``東京タワー と tokyo`` and ``2020年`` gives ``2020 年`` (UAX #29 rules
   WB9-WB13 join letters of one kind only).
3. A piece is split again until ICU keeps it whole when given alone. ICU chooses words in context (Thai's
   dictionary break looks ahead), so a word cut from a long run may split differently on its own; repeating
   until stable makes ``normalize`` idempotent (stage 2 may renormalize a stored normalized caption, and a
   query's normalized form must tokenize to itself).

Tibetan: ICU has no Tibetan dictionary; the tsheg U+0F0B (the syllable separator, category Po) already
separates ``textnorm`` tokens, so Tibetan comes out as syllables, not words. Korean is written with spaces
and stays as ``textnorm`` makes it (particles stay attached: ``서울에서``).

``lang`` is a hint kept for the API (e.g. a per-language analyzer later); today it changes nothing, on
purpose: ICU's word rules and dictionaries are chosen by script, not locale, and a caption must segment the
same whatever language stage 2's language identification gives it, or it could not match stage 1's queries.
"""

from __future__ import annotations

import functools
import threading
import unicodedata
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from wit_builder.core import textnorm
from wit_builder.core.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

# The pip extra that installs the segmenter (also a base dependency: Beam workers of stages 1 and 2 need it)
EXTRA = "segment"
ICU_PACKAGE = "pyicu-wheels"

# Scripts written without spaces between words (values of the Unicode Script property, Scripts.txt)
SPACELESS_SCRIPTS = ("Han", "Hiragana", "Katakana", "Thai", "Lao", "Khmer", "Myanmar", "Tibetan")


@functools.lru_cache(maxsize=1)
def _script_table() -> dict[str, Any]:
    """One compiled character class per spaceless script, from the ``regex`` module's Script property (its own
    Unicode database, pinned in the base dependencies)."""
    import regex

    return {name: regex.compile(rf"\p{{Script={name}}}") for name in SPACELESS_SCRIPTS}


@functools.lru_cache(maxsize=1)
def _spaceless() -> Any:
    """A compiled pattern matching any character of a spaceless script (``regex``'s Script property)."""
    import regex

    return regex.compile("[" + "".join(rf"\p{{Script={name}}}" for name in SPACELESS_SCRIPTS) + "]")


def script_of(ch: str) -> str | None:
    """The spaceless script (one of ``SPACELESS_SCRIPTS``) of the one character ``ch``, or None for every other
    character (Latin, Hangul, digits, punctuation, and the Common characters of CJK text such as ``ー``, ``。``)."""
    if len(ch) != 1:
        raise ValueError(f"script_of takes one character, got {ch!r}")
    for name, pattern in _script_table().items():
        if pattern.match(ch):
            return name
    return None


def needs_segmentation(text: str) -> bool:
    """Does ``text`` hold a character of a script written without spaces (``SPACELESS_SCRIPTS``)?"""
    return not text.isascii() and _spaceless().search(text) is not None


def _load_icu() -> Any:
    """The ``icu`` module (PyICU), or a UsageError naming the extra that installs it."""
    try:
        import icu
    except ImportError as exc:
        raise UsageError(
            f"word segmentation of Chinese, Japanese, Thai, Lao, Khmer, Burmese and Tibetan text needs ICU: "
            f"pip install 'wit-builder[{EXTRA}]' (the {ICU_PACKAGE} wheel) ({exc})"
        ) from None
    return icu


_local = threading.local()  # one BreakIterator per thread: ICU iterators hold state and are not thread-safe


def _word_breaker() -> Any:
    breaker = getattr(_local, "breaker", None)
    if breaker is None:
        icu = _load_icu()
        breaker = icu.BreakIterator.createWordInstance(icu.Locale.getRoot())
        _local.breaker = breaker
        _local.unicode_string = icu.UnicodeString
    return breaker


# NFKC (textnorm's rule 1) decomposes Thai SARA AM U+0E33 into NIKHAHIT U+0E4D + SARA AA U+0E32 (and Lao AM U+0EB3
# likewise), but ICU's Thai and Lao dictionaries spell their words with the single character: given the decomposed
# form, ICU cuts every word holding it (``ตำแหน่ง`` "position" came out ``ตํา แหน่ ง``, ``สำหรับ`` ``สําห รับ``).
# ICU is therefore given the composed form and the pieces are decomposed again, so tokens stay NFKC like the rest.
_AM_COMPOSE = (("\u0e4d\u0e32", "\u0e33"), ("\u0ecd\u0eb2", "\u0eb3"))


def _icu_pieces(run: str) -> list[str]:
    """ICU's words of ``run``: the text between consecutive word boundaries (UAX #29 + dictionaries), with Thai and
    Lao AM composed for ICU and decomposed again in the pieces (``_AM_COMPOSE``)."""
    if "\u0e4d\u0e32" not in run and "\u0ecd\u0eb2" not in run:
        return _icu_words(run)
    for decomposed, composed in _AM_COMPOSE:
        run = run.replace(decomposed, composed)
    pieces = _icu_words(run)
    for decomposed, composed in _AM_COMPOSE:
        pieces = [piece.replace(composed, decomposed) for piece in pieces]
    return pieces


def _icu_words(run: str) -> list[str]:
    breaker = _word_breaker()
    if max(run) <= "\uffff":  # ICU's offsets count UTF-16 units: equal to str indices in the BMP
        breaker.setText(run)
        bounds = [0, *breaker]
        return [run[a:b] for a, b in pairwise(bounds)]
    units = _local.unicode_string(run)  # a supplementary character (CJK Extension B...) is 2 units
    breaker.setText(units)
    bounds = [0, *breaker]
    return [str(units[a:b]) for a, b in pairwise(bounds)]


_CACHED_LENGTH = 32  # longer runs (clauses) rarely repeat; capping the key bounds the cache (~20 MB at most)


def _segment_token(token: str) -> tuple[str, ...]:
    """Rules 2-3 for one ``textnorm`` token holding a spaceless character: ICU's words, each split again until
    ICU keeps it whole alone. Words are cached: they are Zipf-distributed, so most repeat."""
    return _segment_cached(token) if len(token) <= _CACHED_LENGTH else _segment(token)


@functools.lru_cache(maxsize=1 << 16)
def _segment_cached(token: str) -> tuple[str, ...]:
    return _segment(token)


def clear_cache() -> None:
    """Forget the cached words (benchmarks measure a cold cache; tests simulate a missing ICU)."""
    _segment_cached.cache_clear()


def _segment(token: str) -> tuple[str, ...]:
    words: list[str] = []
    for piece in _icu_pieces(token):
        # A piece of a token is a token itself unless it holds an apostrophe or starts with a mark (ICU breaks
        # before the Vietnamese reading marks U+16FF0/1 after Han, which textnorm only takes after a letter)
        for part in (piece,) if piece[0].isalnum() and "'" not in piece else textnorm.TOKEN.findall(piece):
            if part == token or len(part) == 1 or not needs_segmentation(part):  # stable: ICU keeps it whole
                words.append(part)
            else:
                words.extend(_segment_token(part))
    return tuple(words)


def tokenize(text: str, lang: str | None = None) -> list[str]:
    """Normalized tokens of ``text`` in any language (rules 1-3 of the module docstring); ``lang`` (a Wikipedia
    language code such as "ja") is accepted as a hint and changes nothing today (module docstring).

    Raises UsageError naming the extra to install when ``text`` needs segmentation and ICU is missing.
    """
    folded = textnorm.fold(text)
    tokens: list[str] = textnorm.TOKEN.findall(folded)
    if not needs_segmentation(folded):
        return tokens
    words: list[str] = []
    for token in tokens:
        if needs_segmentation(token):
            words.extend(_segment_token(token))
        else:
            words.append(token)
    return words


def normalize(text: str, lang: str | None = None) -> str:
    """``" ".join(tokenize(text, lang))``: the normalized form ("" when the text has no token); normalizing it
    again changes nothing."""
    return " ".join(tokenize(text, lang))


def written_form(normalized: str) -> str:
    """A normalized query (``normalize``'s output) as its source text writes it: the entry MetaCLIP 2's substring
    rule matches against raw text (Chuang et al. 2025, arXiv 2507.22062: ``metaclip/curation/substr_matching.py``
    looks for each metadata entry, as written, inside the caption as written; ``wit_builder.pairs.metaclip_rule``).

    Two steps undo what segmentation and NFKC add and a caption never writes:

    1. Spaces that segmentation put between words are removed: between two tokens that both hold a character of
       a spaceless script (``needs_segmentation``: ``マリ 共和国`` -> ``マリ共和国``), and between a
       Han/Hiragana/Katakana token and any other (``2020 年`` -> ``2020年``, ``planner も`` -> ``plannerも``):
       Japanese and Chinese write digits and Latin words against their characters (measured on the UD sentences
       of tests/data/segment: 678 such neighbours written joined, none with a space). Thai, Lao, Khmer and
       Burmese put a space around digits and Latin words (Thai UD: 155 of 155), so that space stays. Where Thai
       text itself wrote a space between two phrases, a bigram across it is written joined (about 6% of the
       Thai UD bigrams), which then matches only captions that join them.
    2. Thai and Lao AM are composed again (``_AM_COMPOSE``): NFKC splits SARA AM U+0E33 into NIKHAHIT + SARA AA
       (``ดํา``), Thai and Lao as typed and as NFC keep the one character (``ดำ``).

    Case, NFKC's other folds (full-width Latin, half-width kana) and dropped punctuation are not restored: the
    normalized form does not keep them. So the written form of a query with no spaceless-script character is the
    query itself (every English query), and ``normalize(written_form(q))`` is ``q`` for the words of a run.
    """
    tokens = normalized.split(" ")
    spaceless = [needs_segmentation(token) for token in tokens]
    cjk = [flag and _cjk().search(token) is not None for token, flag in zip(tokens, spaceless, strict=True)]
    written = tokens[0]
    for index in range(1, len(tokens)):
        joined = (spaceless[index - 1] and spaceless[index]) or cjk[index - 1] or cjk[index]
        written += ("" if joined else " ") + tokens[index]
    for decomposed, composed in _AM_COMPOSE:
        written = written.replace(decomposed, composed)
    return written


@functools.lru_cache(maxsize=1)
def _cjk() -> Any:
    """A compiled pattern matching a Han, Hiragana or Katakana character (``regex``'s Script property)."""
    import regex

    return regex.compile(r"[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}]")


@functools.lru_cache(maxsize=1)
def _icu_version() -> str:
    return str(_load_icu().ICU_VERSION)


def segmenter_id(lang: str | None = None) -> str:
    """Names what tokenizes text of ``lang``, with versions, e.g. ``"textnorm-u14.0.0+icu-77.1"``: textnorm's rules
    over the running Python's Unicode database, and the ICU library (its rules and dictionaries) that splits the
    spaceless scripts. The same for every language: text of any language may hold a spaceless run (a Japanese
    name in an English caption) and a caption must segment the same whatever language it is given. Stage 1
    records it; stage 2 refuses query folders made with different segmenters.

    Raises UsageError naming the extra to install when ICU is missing.
    """
    return f"textnorm-u{unicodedata.unidata_version}+icu-{_icu_version()}"


def tokenizer(lang: str | None = None) -> Callable[[str], list[str]]:
    """``tokenize`` bound to ``lang``, for callers that take a one-argument function."""
    return functools.partial(tokenize, lang=lang)
