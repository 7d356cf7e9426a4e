"""Brute-force reference implementations the tests hold the fast code to (never used by the pipelines)."""

from __future__ import annotations

import string
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


# MetaCLIP 2's published rule (facebookresearch/MetaCLIP, metaclip/curation/substr_matching.py and curate.py),
# written again here from that code, loop for loop, as the oracle of ``wit_builder.pairs.metaclip_rule``.
_METACLIP2_EXTRA_PUNCTUATION = ["，", "。", "、", "；", "：", "？", "！", "“", "”", "‘", "’", "（", "）", "【", "】",
                                "《", "》", "〈", "〉", "「", "」", "『", "』", "～", "—"]


def _metaclip2_is_cjk_or_similar(char: str) -> bool:
    cp = ord(char)
    if (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0x2CEB0 <= cp <= 0x2EBEF
            or 0xF900 <= cp <= 0xFAFF or 0x2E80 <= cp <= 0x2EFF or 0x2F00 <= cp <= 0x2FDF or 0x2FF0 <= cp <= 0x2FFF):
        return True
    if (0x0E00 <= cp <= 0x0E7F or 0x0E80 <= cp <= 0x0EFF or 0x1000 <= cp <= 0x109F or 0x1780 <= cp <= 0x17FF
            or 0x0F00 <= cp <= 0x0FFF):
        return True
    return char in string.punctuation or char in _METACLIP2_EXTRA_PUNCTUATION


def _metaclip2_spacing(text: str) -> str:
    spaced_text = f" {text} "
    for punct in [",", ".", ";", ":", "?", "!", "`"]:
        spaced_text = spaced_text.replace(punct, f" {punct} ")
    for char in ["\t", "\n", "\r"]:
        spaced_text = spaced_text.replace(char, " ")
    return spaced_text


def _metaclip2_spaced_entry(entry: str) -> str:
    spaced_entry = entry
    if not _metaclip2_is_cjk_or_similar(spaced_entry[0]):
        spaced_entry = f" {spaced_entry}"
    if not _metaclip2_is_cjk_or_similar(spaced_entry[-1]):
        spaced_entry = f"{spaced_entry} "
    return spaced_entry


def reference_metaclip2_match(entries: Iterable[str], text: str) -> list[str]:
    """MetaCLIP 2's substr_match over every entry, brute force: the text stripped (``curate.py``), spaced, and
    each entry's spaced form looked for in it."""
    haystack = _metaclip2_spacing(text.strip())
    return sorted({e for e in entries if _metaclip2_spaced_entry(e) in haystack})


def reference_p_to_t(entry_counts: Sequence[int], p: float) -> int:
    """MetaCLIP 2's ``p_to_t`` (curate.py), as published: the count at which the sorted counts' running share of
    the total is closest to ``p``."""
    import numpy as np

    counts = np.sort(np.asarray(entry_counts))
    portion = np.cumsum(counts) / counts.sum()
    return int(counts[(np.abs(portion - p)).argmin()])


def reference_t_to_p(entry_counts: Sequence[int], t: int) -> float:
    """MetaCLIP 2's ``t_to_p``: the share of all matches that entries with fewer than ``t`` matches hold."""
    import numpy as np

    counts = np.asarray(entry_counts)
    return float(counts[counts < t].sum() / counts.sum())
