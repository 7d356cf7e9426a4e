"""Which n-grams, titles and WordNet lemmas become queries: eligibility, scores, ranking, budgets.

Every query is normalized by ``wit_builder.core.textnorm`` before anything else, so the same phrase from two
sources is the same query. Per source (``schemas.queries.SOURCES``, taken in this order):

- **unigram**: a token with at least one letter, not one character alone unless Han or Hangul (``is_query_token``),
  occurring at least ``min_unigram_count`` times in the plain text. ``count`` = its occurrences; ``score`` = ``count``.
- **bigram**: two adjacent tokens on one line of plain text, both query tokens, occurring together at least
  ``min_bigram_count`` times. ``score`` = normalized PMI,
  ``npmi = log(p(ab) / (p(a) p(b))) / -log p(ab)`` with ``p(x) = count(x) / N`` and ``N`` the number of
  tokens. We rank by NPMI rather than raw PMI because PMI's maximum, ``-log p(ab)``, grows as a pair gets
  rarer, so raw PMI fills the budget with the rarest pairs that clear the count floor (typos, names seen
  exactly ``min_bigram_count`` times); NPMI lies in [-1, 1], is 1 for words that only ever occur together
  whatever their frequency, and ties between such pairs are broken by the larger count. The count floor
  (default 30) still matters: with fewer co-occurrences the probability estimates are noise.
- **title**: the phrase a main-namespace, non-redirect, non-disambiguation article title names
  (``wikitext.title_phrase``: "Mercury (planet)" -> "mercury"), with at least one letter. ``score`` = the
  article's traffic: pageviews from Wikimedia pageview dumps (a redirect's views count for its target) when
  given, else the number of distinct main-namespace articles that link to it (links through a redirect count
  for the target). Several articles with the same phrase add their scores.
- **wordnet**: every lemma name of every WordNet synset, underscores as spaces. ``score`` = WordNet's own
  frequency, the sum of the SemCor tag counts (``cntlist.rev``) of the lemma's sense keys.

``count`` of a title or WordNet query is its occurrences in the plain text when it has one or two tokens
(exactly the unigram / bigram counts), and 0 when it is longer: counting every longer n-gram of a whole
Wikipedia costs more than the rest of the stage, and nothing ranks by it.

**Bounded memory: which n-grams are counted exactly.** Holding an exact count for every distinct unigram and
bigram costs memory that grows with the text (hundreds of millions of distinct bigrams in the English
Wikipedia), so stage 1 counts in two passes (``keep_ngrams``):

1. Every token and every bigram goes into a count-min sketch (``ngram_sketch.CountMinSketch``; ``depth`` rows
   of ``width`` counters, fixed size, summed over workers). An estimate ``est(x)`` is never below the true
   count ``c(x)``, and ``est(x) <= c(x) + e / width * N`` (``N``: the tokens, or bigrams, counted) with
   probability at least ``1 - exp(-depth)`` (Cormode & Muthukrishnan 2005).
2. The text is read again, and only these n-grams are counted exactly:
   - a unigram with a letter whose ``est >= min(min_unigram_count, min_bigram_count)``;
   - a bigram of two tokens with a letter whose ``est(ab) >= min_bigram_count`` and whose words both have
     ``est >= min_bigram_count`` (a bigram occurs at most as often as each of its words);
   - the one- and two-token phrases of the titles that could be selected and of the WordNet lemmas.

Since estimates never fall short, every n-gram that reaches a threshold is among those counted, with its exact
count, and so is every word of such a bigram: the candidates, their scores and the selected queries are
exactly those of counting everything. What the sketch's error changes is only how many n-grams below the
thresholds are counted too (those whose estimate is pushed over by at most ``e / width * N``): memory is the
two sketches (``8 * depth * width`` bytes each) plus the exactly counted n-grams, which grow with the number
of n-grams near or above the thresholds, not with the number of distinct n-grams. On Dataflow only those
exact counts and one sketch per worker are shuffled, instead of every distinct n-gram.

Within a source, candidates rank by ``score`` (high first), then ``count`` (high first), then the query
(alphabetically), a total order, so selection is deterministic. WordNet puts fewer tokens before the
alphabetical step (``wordnet_rank_key``). Titles skip the ``count`` step (score, then
query): the pipeline keeps only the titles that could be selected before it looks their counts up, so that
the title list is not joined with every n-gram of the dump. Each source takes its best candidates up to
its budget, skipping queries an earlier source already took; a source with fewer eligible candidates than its
budget gives all of them. Budgets default to MetaCLIP's published split (251,465 + 100,646 + 61,235 + 86,654
= 500,000). When they add up to more than ``max_queries``, each is scaled down in proportion (largest
remainder, ties to the earlier source) so that the list never exceeds ``max_queries`` and keeps the mix.

**Per language.** A dump's text and titles are tokenized by ``core.segment`` (words of scripts written without
spaces segmented; English exactly as ``core.textnorm``). English keeps the rule above (MetaCLIP 1's). Any other
language takes MetaCLIP 2's per-language caps (``language_budgets``; Chuang et al. 2025, arXiv 2507.22062, and
``docs/metaclip2.md`` / ``metaclip/metadata/build_metadata.py`` of github.com/facebookresearch/MetaCLIP at
f47f7841f6a9): unigrams ``min(budget, 10%`` of the language's distinct tokens), bigrams ``min(budget, 40%`` of that
unigram budget), titles ``min(budget, 76%`` of its eligible titles), WordNet its budget; docs/stages/queries.md
lists where we differ from MetaCLIP 2's code and why. A one-character token is a query token only when it is a
Han ideograph or a Hangul syllable (``is_one_character_query``, measured per script).
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

from schemas.queries import SOURCES
from wit_builder.core import segment
from wit_builder.core.options import option
from wit_builder.core.textnorm import is_phrase_query as _is_phrase_query
from wit_builder.core.textnorm import normalize
from wit_builder.queries.ngram_sketch import CountMinSketch
from wit_builder.queries.wikitext import title_phrase


class Candidate(NamedTuple):
    """One candidate query of a source, before the budget cut."""

    query: str   # normalized
    # occurrences: tokens/bigrams in the article text, SemCor count for WordNet, 0 for titles. The name shadows
    # tuple.count (mypy's complaint); kept because stage 1's Beam code and tests read ``.count``.
    count: int  # type: ignore[assignment]
    score: float  # ranking score: the count (unigram), NPMI (bigram), pageviews (title), count (WordNet)


def rank_key(candidate: Candidate) -> tuple[float, int, str]:
    """Smaller is better: score high first, then count high first, then the query alphabetically."""
    return (-candidate.score, -candidate.count, candidate.query)


def title_rank_key(candidate: Candidate) -> tuple[float, str]:
    """Titles: score high first, then the query alphabetically (``count`` plays no part)."""
    return (-candidate.score, candidate.query)


def wordnet_rank_key(candidate: Candidate) -> tuple[float, int, int, str]:
    """WordNet: like ``rank_key``, but among equals fewer tokens first, then alphabetically.

    Most lemmas have no SemCor count and phrases of 3+ tokens have no text count, so without this step a
    binding WordNet budget would be filled alphabetically (a..m); single words are the more general concepts.
    """
    return (-candidate.score, -candidate.count, candidate.query.count(" "), candidate.query)


RANK_KEYS = {"unigram": rank_key, "bigram": rank_key, "title": title_rank_key, "wordnet": wordnet_rank_key}


@dataclass(frozen=True)
class Budgets:
    """Queries per source and in all, MetaCLIP's split (Xu et al. 2023, "Demystifying CLIP Data"); the
    command's budget flags (an argument group of ``wit build-queries``).

    Raises ValueError for a negative budget, naming its field (the CLI shows the flag).
    """

    max_queries: int = option(500_000, unit="queries", help="most queries in all; the sources' budgets scale down "
                                                            "to fit")
    unigram_budget: int = option(251_465, unit="queries", help="most unigram queries (MetaCLIP's split)")
    bigram_budget: int = option(100_646, unit="queries", help="most bigram queries (MetaCLIP's split)")
    title_budget: int = option(61_235, unit="queries", help="most title queries (MetaCLIP's split)")
    wordnet_budget: int = option(86_654, unit="queries", help="most wordnet queries (MetaCLIP's split)")

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"{f.name} must be >= 0, got {getattr(self, f.name)}")

    def requested(self) -> dict[str, int]:
        """Each source's budget as given, before scaling."""
        return {source: getattr(self, f"{source}_budget") for source in SOURCES}

    def per_source(self) -> dict[str, int]:
        """Each source's budget, scaled down in proportion when their sum exceeds ``max_queries``."""
        wanted = self.requested()
        total = sum(wanted.values())
        if total <= self.max_queries:
            return wanted
        exact = {source: n * self.max_queries / total for source, n in wanted.items()}
        scaled = {source: math.floor(x) for source, x in exact.items()}
        leftover = self.max_queries - sum(scaled.values())
        by_remainder = sorted(SOURCES, key=lambda s: (-(exact[s] - scaled[s]), SOURCES.index(s)))
        for source in by_remainder[:leftover]:
            scaled[source] += 1
        return scaled


@dataclass(frozen=True)
class Thresholds:
    """Occurrence floors in the plain text (unigrams: MetaCLIP's 100); an argument group of ``wit build-queries``.

    Raises ValueError below 1, naming the field (the CLI shows the flag).
    """

    min_unigram_count: int = option(100, unit="occurrences", help="occurrences a word needs to become a query")
    min_bigram_count: int = option(30, unit="co-occurrences",
                                   help="co-occurrences a bigram needs before its NPMI is trusted")

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(f"count thresholds must be >= 1, got {f.name} {getattr(self, f.name)}")


def is_one_character_query(ch: str) -> bool:
    """May a token of one character be a unigram/bigram query token? A Han ideograph ("猫", "山") or a Hangul
    syllable ("산", "물"); not a kana, a Thai, Lao, Khmer or Myanmar letter, an Arabic, Hebrew or Indic letter,
    nor a letter of an alphabet.

    Decided per script on real text (``benchmarks/one_character_tokens.py`` on the Universal Dependencies
    sentences of tests/data/segment and the jawiki excerpt; docs/stages/queries.md, "One-character queries"):
    one-character Han tokens are morphemes with a meaning of their own (771 distinct in 300 Chinese sentences,
    913 in the jawiki excerpt; the most frequent, "的" in 65% of Chinese sentences, is to Chinese what "the"
    is to English, a word that English keeps too); one-character Hangul tokens are whole space-delimited words
    (54 distinct in 100 Korean sentences, none in more than 10% of them). Single kana are particles and the
    inflection endings the segmenter splits off ("の" in 46-54% of Japanese sentences, "は" 38-43%, "た" from
    "作られた"); single Thai letters are abbreviation letters ("ส", "ค", 17 distinct in 300 sentences); a lone
    Arabic-script letter is a conjunction split off ("و" in 64% of Persian sentences) and a lone Devanagari
    letter an initial. Single letters of alphabets were measured on LAION captions (docs/ARCHITECTURE.md,
    "Match rule").
    """
    if "\uac00" <= ch <= "\ud7a3":  # Hangul syllables
        return True
    return unicodedata.name(ch, "").startswith(("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH"))


def is_query_token(token: str) -> bool:
    """May this token stand as (part of) a unigram or bigram query? It must contain a letter, and a token of
    one character must be a Han ideograph or a Hangul syllable (``is_one_character_query``). Pure numbers
    ("1990", "2") name no visual concept and would match a large share of all alt texts; titles and WordNet
    entries may still hold digits ("apollo 11") and single letters ("vitamin c")."""
    if len(token) == 1:
        return is_one_character_query(token)
    return any(ch.isalpha() for ch in token)


def is_phrase_query(tokens: list[str]) -> bool:
    """May these tokens, a title's or a WordNet lemma's, stand as one query? One token must pass
    ``is_query_token``; a phrase of several needs a letter somewhere ("b 52", "3 d", "vitamin c" stay)."""
    if len(tokens) == 1:
        return is_query_token(tokens[0])
    return _is_phrase_query(tokens)


def unigram_candidate(token: str, count: int, thresholds: Thresholds) -> Candidate | None:
    """The token as a candidate (score = count) when it occurs often enough and is a query token, else None."""
    if count >= thresholds.min_unigram_count and is_query_token(token):
        return Candidate(token, count, float(count))
    return None


def bigram_is_eligible(bigram: str, count: int, thresholds: Thresholds) -> bool:
    """The count and token test, before the unigram counts are known (see ``bigram_candidate``)."""
    left, _, right = bigram.partition(" ")
    return count >= thresholds.min_bigram_count and is_query_token(left) and is_query_token(right)


# MetaCLIP 2's per-language caps (arXiv 2507.22062; metaclip/metadata/build_metadata.py and docs/metaclip2.md,
# github.com/facebookresearch/MetaCLIP at f47f7841f6a9): the English counts of MetaCLIP 1 as upper bounds.
UNIGRAM_SHARE = 0.10   # of the language's distinct unigrams ("top 10% of available unigrams")
BIGRAM_SHARE = 0.40    # of the language's unigram budget (100,646 / 251,465 = 0.40, MetaCLIP 1's English ratio)
TITLE_SHARE = 0.76     # of the language's titles ("top 76% of available titles")


def language_budgets(budgets: Mapping[str, int], lang: str, distinct_unigrams: int, titles: int) -> dict[str, int]:
    """Each source's budget for a dump in ``lang`` (module docstring, "Per language").

    English keeps MetaCLIP 1's rule, the budgets as given (MetaCLIP 2 copies its English entries from
    MetaCLIP 1 too). Any other language takes MetaCLIP 2's: unigrams ``min(budget, 10% of its distinct
    unigrams)``, bigrams ``min(budget, 40% of that unigram budget)``, titles ``min(budget, 76% of its eligible
    titles)``, WordNet its budget. ``budgets`` are the flags' (scaled to ``--max-queries``), so they are the caps.
    """
    if lang in ("en", "simple"):
        return dict(budgets)
    unigram = min(budgets["unigram"], int(distinct_unigrams * UNIGRAM_SHARE))
    return {"unigram": unigram, "bigram": min(budgets["bigram"], int(unigram * BIGRAM_SHARE)),
            "title": min(budgets["title"], int(titles * TITLE_SHARE)), "wordnet": budgets["wordnet"]}


def npmi(count_ab: int, count_a: int, count_b: int, total_tokens: int) -> float:
    """Normalized pointwise mutual information of a bigram from its and its tokens' counts, in [-1, 1].

    Bouma 2009, "Normalized (pointwise) mutual information in collocation extraction". Counts must be >= 1
    (a 0 raises ValueError from ``math.log``); ``total_tokens`` is N of the module docstring.
    """
    p_ab = count_ab / total_tokens
    if p_ab >= 1.0:
        return 1.0
    pmi = math.log(p_ab / ((count_a / total_tokens) * (count_b / total_tokens)))
    return pmi / -math.log(p_ab)


def bigram_candidate(bigram: str, count: int, count_a: int, count_b: int, total_tokens: int) -> Candidate:
    """The bigram ("a b") as a candidate scored by ``npmi``; eligibility is ``bigram_is_eligible``'s."""
    return Candidate(bigram, count, npmi(count, count_a, count_b, total_tokens))


def title_query(title: str, lang: str | None = None) -> str | None:
    """The normalized query a title gives (``core.segment`` in ``lang``), or None when it has no token with a
    letter (years, "!!!") or is one character that may not be a query ("は")."""
    tokens = segment.tokenize(title_phrase(title), lang)
    return " ".join(tokens) if is_phrase_query(tokens) else None


def wordnet_query(lemma_name: str) -> str | None:
    """The normalized query of a WordNet lemma name ("ice_cream" -> "ice cream"), None without a letter."""
    query = normalize(lemma_name.replace("_", " "))
    return query if query and is_phrase_query(query.split()) else None


def is_short_phrase(query: str) -> bool:
    """Is ``query`` of one or two tokens, a phrase whose count pass 2 looks up (longer ones are not counted)?"""
    return query.count(" ") <= 1


def phrase_count(query: str, ngram_counts: Mapping[str, int]) -> int:
    """Occurrences of a one- or two-token phrase in the plain text; 0 for longer phrases (not counted)."""
    return ngram_counts.get(query, 0) if is_short_phrase(query) else 0


def prune_sizes(budgets: Mapping[str, int]) -> dict[str, int]:
    """Source -> how many of its best candidates selection can ever need: its budget plus the budgets of the
    sources before it in SOURCES' order (each source can lose at most as many candidates to earlier sources as
    those took). KeyError for a source without a budget."""
    sizes, total = {}, 0
    for source in SOURCES:
        total += budgets[source]
        sizes[source] = total
    return sizes


def short_phrases(candidates: Iterable[Candidate]) -> frozenset[str]:
    """The one- and two-token queries among ``candidates``: the ones whose count can be looked up in pass 2."""
    return frozenset(c.query for c in candidates if is_short_phrase(c.query))


def with_token_count(token_count: Sequence[int], rows: Iterable[tuple]) -> list[tuple]:
    """Each bigram row with the count of one of its tokens appended (0 when the token was not counted): one of
    the two joins that give ``bigram_candidate`` its ``count_a`` and ``count_b``."""
    count = token_count[0] if token_count else 0
    return [(*row, count) for row in rows]


@dataclass
class SourceSummary:
    """What ``select`` did with one source's candidates (for stats.json)."""

    offered: int = 0         # candidates offered (the pipeline prunes each source to those that could be taken)
    selected: int = 0
    already_taken: int = 0   # candidates skipped because an earlier source took the same query


def select(
    candidates: Mapping[str, Iterable[Candidate]], budgets: Mapping[str, int]
) -> tuple[list[tuple[str, Candidate]], dict[str, SourceSummary]]:
    """The query list: per source in ``SOURCES`` order, the best candidates up to the budget, no duplicates.

    Returns (source, candidate) rows in list order (source by source, best first) and a summary per source.
    """
    taken: set[str] = set()
    rows: list[tuple[str, Candidate]] = []
    summary = {source: SourceSummary() for source in SOURCES}
    for source in SOURCES:
        ranked = sorted(set(candidates.get(source, ())), key=RANK_KEYS[source])
        summary[source].offered = len(ranked)
        budget = budgets[source]
        for candidate in ranked:
            if summary[source].selected >= budget:
                break
            if candidate.query in taken:
                summary[source].already_taken += 1
                continue
            taken.add(candidate.query)
            rows.append((source, candidate))
            summary[source].selected += 1
    return rows, summary


def keep_ngrams(
    unigrams: Mapping[str, int], bigrams: Mapping[str, int], unigram_sketch: CountMinSketch,
    bigram_sketch: CountMinSketch,
    thresholds: Thresholds, phrases: frozenset[str],
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """The (n-gram, count) items of partial counts that are counted exactly, by the rule of the module docstring.

    ``unigrams`` must hold every token of the bigrams in ``bigrams`` (both counted from the same text).
    The sketches hold the whole text's unigram and bigram counts. Returns (unigrams, bigrams), each in the
    order of its input mapping.
    """
    floor = min(thresholds.min_unigram_count, thresholds.min_bigram_count)
    words = list(unigrams)
    word_estimates = dict(zip(words, unigram_sketch.estimate(words).tolist(), strict=True))
    kept_unigrams = [(w, unigrams[w]) for w in words
                     if (word_estimates[w] >= floor and is_query_token(w)) or w in phrases]
    frequent = {w for w, est in word_estimates.items() if est >= thresholds.min_bigram_count and is_query_token(w)}
    pairs = [b for b in bigrams if b in phrases or all(w in frequent for w in b.split(" "))]
    pair_estimates = bigram_sketch.estimate(pairs).tolist()
    kept_bigrams = [(b, bigrams[b]) for b, est in zip(pairs, pair_estimates, strict=True)
                    if est >= thresholds.min_bigram_count or b in phrases]
    return kept_unigrams, kept_bigrams


def token_lines(text: str, lang: str | None = None) -> list[list[str]]:
    """The tokens of each line of ``text`` (``core.segment.tokenize`` in ``lang``: words of scripts written
    without spaces segmented, others as ``core.textnorm``), lines without a token left out."""
    return [tokens for line in text.split("\n") if (tokens := segment.tokenize(line, lang))]


def count_token_lines(lines: Iterable[list[str]], unigrams: Counter[str], bigrams: Counter[str]) -> int:
    """Add each line's tokens to ``unigrams`` and its adjacent token pairs to ``bigrams``; return how many
    tokens there were. Bigrams stop at line ends: a heading, list item or paragraph does not run into the next."""
    total = 0
    for tokens in lines:
        total += len(tokens)
        unigrams.update(tokens)
        bigrams.update(f"{a} {b}" for a, b in zip(tokens, tokens[1:]))  # noqa: B905 (pairs, lengths differ by 1)
    return total


def count_ngrams(text: str, unigrams: Counter[str], bigrams: Counter[str], lang: str | None = None) -> int:
    """``count_token_lines`` of ``token_lines(text, lang)``: the plain text's n-grams counted, its tokens returned."""
    return count_token_lines(token_lines(text, lang), unigrams, bigrams)
