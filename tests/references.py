"""Brute-force reference implementations the tests hold the fast code to (never used by the pipelines)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from wit_builder.core.balance import Rank, sample_rank, threshold_from_smallest
from wit_builder.core.textnorm import normalize
from wit_builder.core.uid import hash_rank
from wit_builder.pairs.metaclip_rule import spaced


def reference_hard_selection(
    pairs: Mapping[str, Sequence[str]], target: int, seed: int
) -> dict[str, set[str]]:
    """Brute force: per query, the uids of its ``target`` smallest-ranked pairs (ties by uid). For tests."""
    by_query: dict[str, list[tuple[int, str]]] = {}
    for uid, queries in pairs.items():
        for q in set(queries):
            by_query.setdefault(q, []).append((hash_rank(uid, seed), uid))
    return {q: {uid for _, uid in sorted(ranked)[:target]} for q, ranked in by_query.items()}


def thresholds(samples: Iterable[tuple[str, Iterable[str]]], cap: int, seed: int) -> dict[str, Rank]:
    """Reference (in-memory) per-query thresholds for queries with more than ``cap`` samples."""
    if cap < 1:
        raise ValueError(f"per-query cap must be >= 1, got {cap}")
    ranks: dict[str, list[Rank]] = {}
    for uid, queries in samples:
        for query in set(queries):
            ranks.setdefault(query, []).append(sample_rank(uid, seed))
    out = {}
    for query, values in ranks.items():
        threshold = threshold_from_smallest(sorted(values)[: cap + 1], cap)
        if threshold is not None:
            out[query] = threshold
    return out


def reference_kept(samples: Sequence[tuple[str, Sequence[str]]], cap: int, seed: int) -> set[str]:
    """Brute force of stage 4's cap: each query keeps its ``cap`` smallest-ranked samples (stage 2's rank); a
    sample stays if any query keeps it, or if it has no query."""
    kept = set()
    for query in {q for _, queries in samples for q in queries}:
        members = sorted((hash_rank(uid, seed), uid) for uid, queries in samples if query in queries)
        kept.update(uid for _, uid in members[:cap])
    kept.update(uid for uid, queries in samples if not queries)
    return kept


def reference_match(queries: Iterable[str], text: str) -> list[str]:
    """Brute force over every query with the spec's rule: the oracle the tests hold the automaton to."""
    haystack = f" {normalize(text)} "
    return sorted({q for q in queries if f" {q} " in haystack})


def reference_metaclip_match(entries: Iterable[str], text: str) -> list[str]:
    """Brute force over every entry (MetaCLIP's own loop): the oracle the automaton is tested against."""
    haystack = spaced(text)
    return sorted({e for e in entries if f" {e} " in haystack})
