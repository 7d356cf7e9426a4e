"""Per-query balancing: keep at most a cap of pairs per query without grouping the matches.

Stage 2 balances the matched pairs (below); stage 4 and the trainer re-balance the downloaded samples with the
same rank (``sample_rank``, ``over_cap_queries``, at the end of this module).

Two passes over the (query, rank) matches, both bounded combiners:

1. ``SmallestRanks``: per query, the number of matches and the ``target`` smallest ranks seen (a
   bounded buffer, merged across workers). Its output is the query's matched count and, when the query
   has more matches than the target, its threshold: the target-th smallest rank.
2. Only queries over the target get a row in the cut table (threshold or keep probability), which is
   small and goes to every worker as a side input. A pair is kept when any of its queries keeps it.

``hard`` (CLIP: "up to 20,000 pairs per query"): a query keeps a pair when the pair's seeded hash rank
is at most the query's threshold, i.e. exactly its ``target`` smallest-ranked pairs.
``probabilistic`` (MetaCLIP): a query keeps a pair with probability ``p = min(1, target / matched)``,
decided by a seeded coin per (uid, query), so reruns agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from wit_builder.core.uid import draw, hash_rank

MODES = ("hard", "probabilistic")
ENGLISH = "en"
# How each language's cap is set in a run of several languages: MetaCLIP 2's rule (English at --per-query-cap,
# every other language at the count that leaves it the same tail share, ``language_caps``), or one cap for all.
LANGUAGE_CAP_RULES = ("metaclip2", "same")


@dataclass(frozen=True)
class BalanceConfig:
    mode: str = "hard"
    per_query_cap: int = 20_000
    seed: int = 0
    oversample: float = 1.0  # keep this many times the cap now; stage 4 caps again after download losses

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"balance mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.per_query_cap < 1:
            raise ValueError(f"per_query_cap must be at least 1, not {self.per_query_cap}")  # the cli names the flag
        if not (self.oversample >= 1.0 and math.isfinite(self.oversample)):
            raise ValueError(f"oversample must be a finite number >= 1, not {self.oversample}")

    @property
    def target(self) -> int:
        """Pairs to keep per query in this stage: the cap times the oversampling factor."""
        return math.ceil(self.per_query_cap * self.oversample - 1e-9)


class SmallestRanks:
    """Bounded accumulator: (match count, up to ``k`` smallest ranks). Pure; pipelines wrap it."""

    def __init__(self, k: int):
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        self.k = k

    def create(self) -> tuple[int, list[int]]:
        return 0, []

    def _compact(self, ranks: list[int]) -> list[int]:
        ranks.sort()
        del ranks[self.k :]
        return ranks

    def add(self, acc: tuple[int, list[int]], rank: int) -> tuple[int, list[int]]:
        count, ranks = acc
        ranks.append(rank)
        if len(ranks) >= 2 * self.k:  # amortized: sort once per k additions, memory stays under 2k
            self._compact(ranks)
        return count + 1, ranks

    def merge(self, accs: Iterable[tuple[int, list[int]]]) -> tuple[int, list[int]]:
        count, merged = 0, []
        for c, ranks in accs:
            count += c
            merged.extend(ranks)
            if len(merged) >= 2 * self.k:
                self._compact(merged)
        return count, merged

    def compact(self, acc: tuple[int, list[int]]) -> tuple[int, list[int]]:
        count, ranks = acc
        return count, self._compact(ranks)

    def extract(self, acc: tuple[int, list[int]]) -> tuple[int, int | None]:
        """(matched, threshold): threshold is the k-th smallest rank, or None when nothing is cut."""
        count, ranks = acc
        if count <= self.k:
            return count, None
        return count, self._compact(ranks)[-1]


def cut_value(config: BalanceConfig, matched: int, threshold: int | None) -> float | int | None:
    """A query's row in the cut table, or None when the query keeps every match (no row)."""
    if matched <= config.target:
        return None
    if config.mode == "hard":
        return threshold
    return config.target / matched


def kept_queries(
    uid: str, rank: int, queries: Sequence[str], cuts: Mapping[str, float | int], config: BalanceConfig
) -> list[str]:
    """The queries (in the given order) that keep this pair; empty means the pair is dropped."""
    if config.mode == "hard":
        return [q for q in queries if (cut := cuts.get(q)) is None or rank <= cut]
    return [q for q in queries if (cut := cuts.get(q)) is None or draw(uid, q, config.seed) < cut]


# Per-language caps (MetaCLIP 2, arXiv 2507.22062, section 3.2; ``global_count``, ``t_to_p`` and ``p_to_t`` of
# facebookresearch/MetaCLIP metaclip/curation/curate.py). English keeps the cap ``t_en``; the share of English
# matches that fall to its tail entries (those matched fewer than ``t_en`` times), ``p = t_to_p(en, t_en)``, is
# carried to every other language, whose cap is the count at which its own sorted counts' running share of its
# matches comes closest to ``p`` (``p_to_t``). A language with few matches thereby gets a small cap, one whose
# head is as heavy as English's a cap like English's.


def tail_share(counts: np.ndarray, cap: int) -> float:
    """MetaCLIP 2's ``t_to_p``: the share of all matches held by entries matched fewer than ``cap`` times
    (``counts``: matches per entry of one language, zeros included). 0.0 when there are no matches."""
    total = counts.sum()
    return float(counts[counts < cap].sum() / total) if total else 0.0


def cap_for_share(counts: np.ndarray, share: float) -> int:
    """MetaCLIP 2's ``p_to_t``: the count at which the language's counts, sorted ascending, reach a running share
    of its matches closest to ``share`` (the first such count on ties, as numpy's ``argmin``). At least 1; a
    language with no matches gets 1 (nothing to cap)."""
    ordered = np.sort(np.asarray(counts, np.int64))
    total = ordered.sum()
    if not total:
        return 1
    portion = np.cumsum(ordered) / total
    return max(1, int(ordered[int(np.abs(portion - share).argmin())]))


def language_caps(counts: Mapping[str, np.ndarray], cap: int, rule: str = "metaclip2") -> dict[str, int]:
    """The per-query cap of each language of a run.

    ``counts`` maps a language to its entries' match counts; ``cap`` is ``--per-query-cap``. Under ``metaclip2``
    English (``en``) keeps ``cap`` and every other language gets ``cap_for_share(counts, tail_share(en, cap))``;
    without English in the run, or under ``same``, every language gets ``cap``. ValueError for an unknown rule.
    """
    if rule not in LANGUAGE_CAP_RULES:
        raise ValueError(f"language cap rule must be one of {', '.join(LANGUAGE_CAP_RULES)}, not {rule!r}")
    if rule == "same" or ENGLISH not in counts:
        return {lang: cap for lang in counts}
    share = tail_share(np.asarray(counts[ENGLISH], np.int64), cap)
    return {lang: cap if lang == ENGLISH else cap_for_share(np.asarray(c, np.int64), share)
            for lang, c in counts.items()}


def scaled_target(cap: int, oversample: float) -> int:
    """``BalanceConfig.target`` for another cap: pairs kept per query in stage 2 for a language capped at ``cap``."""
    return math.ceil(cap * oversample - 1e-9)


# Re-balancing in stage 4 (and at load time in the trainer, trainer/balance.py): after download losses and
# dedup, every query is capped again at ``--per-query-cap``.
#
# The rule is stage 2's hard balance with the same rank function: every sample has a seeded hash rank of
# its uid; a query keeps the ``cap`` samples with the smallest ranks; a sample survives when ANY of its
# queries keeps it (or it has no query at all: nothing to cap). Ranks are ``(hash, uid)``, so ties are
# impossible and the choice is the same on every worker and every run. The per-query threshold (the cap-th
# smallest rank) is computable with a bounded combiner, so the pipeline never groups samples by query.

Rank = tuple[int, str]


def sample_rank(uid: str, seed: int) -> Rank:
    """The sample's seeded rank: stage 2's ``wit_builder.core.uid.hash_rank``, then the uid itself as tie-break."""
    return (hash_rank(uid, seed), uid)


def threshold_from_smallest(smallest: list[Rank], cap: int) -> Rank | None:
    """A query's threshold from its ``cap + 1`` smallest ranks (sorted): the cap-th rank when the query has
    more than ``cap`` samples, else None (the query keeps everything)."""
    return smallest[cap - 1] if len(smallest) > cap else None


def over_cap_queries(uid: str, queries: Iterable[str], table: Mapping[str, Rank], seed: int) -> list[str] | None:
    """None when the sample is kept (some query keeps it); else the sorted queries that all dropped it."""
    rank = sample_rank(uid, seed)
    dropped = []
    for query in sorted(set(queries)):
        threshold = table.get(query)
        if threshold is None or rank <= threshold:
            return None
        dropped.append(query)
    return dropped or None
