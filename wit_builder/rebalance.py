"""Re-balancing after download losses and dedup: cap every query again at ``--per-query-cap``.

The rule is stage 2's hard balance with the same rank function: every sample has a seeded hash rank of
its uid; a query keeps the ``cap`` samples with the smallest ranks; a sample survives when ANY of its
queries keeps it (or it has no query at all: nothing to cap). Ranks are ``(hash, uid)``, so ties are
impossible and the choice is the same on every worker and every run. The per-query threshold (the cap-th
smallest rank) is computable with a bounded combiner, so the pipeline never groups samples by query.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from wit_builder.uid import hash_rank as uid_hash_rank

Rank = tuple[int, str]


def hash_rank(uid: str, seed: int) -> Rank:
    """The sample's seeded rank: stage 2's ``wit_builder.uid.hash_rank``, then the uid itself as tie-break."""
    return (uid_hash_rank(uid, seed), uid)


def threshold_from_smallest(smallest: list[Rank], cap: int) -> Rank | None:
    """A query's threshold from its ``cap + 1`` smallest ranks (sorted): the cap-th rank when the query has
    more than ``cap`` samples, else None (the query keeps everything)."""
    return smallest[cap - 1] if len(smallest) > cap else None


def thresholds(samples: Iterable[tuple[str, Iterable[str]]], cap: int, seed: int) -> dict[str, Rank]:
    """Reference (in-memory) per-query thresholds for queries with more than ``cap`` samples."""
    if cap < 1:
        raise ValueError(f"per-query cap must be >= 1, got {cap}")
    ranks: dict[str, list[Rank]] = {}
    for uid, queries in samples:
        for query in set(queries):
            ranks.setdefault(query, []).append(hash_rank(uid, seed))
    out = {}
    for query, values in ranks.items():
        threshold = threshold_from_smallest(sorted(values)[: cap + 1], cap)
        if threshold is not None:
            out[query] = threshold
    return out


def over_cap_queries(uid: str, queries: Iterable[str], table: Mapping[str, Rank], seed: int) -> list[str] | None:
    """None when the sample is kept (some query keeps it); else the sorted queries that all dropped it."""
    rank = hash_rank(uid, seed)
    dropped = []
    for query in sorted(set(queries)):
        threshold = table.get(query)
        if threshold is None or rank <= threshold:
            return None
        dropped.append(query)
    return dropped or None
