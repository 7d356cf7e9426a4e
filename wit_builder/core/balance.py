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

from wit_builder.core.uid import draw, hash_rank

MODES = ("hard", "probabilistic")


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
