"""Group download rows into url shards by host, so that politeness limits hold for a whole run.

Per-host limits (concurrency, rate, robots.txt, Retry-After pauses) live in one worker process. If rows of
one host were spread over shards that run at once on N workers, the host would see N times the limits. So:

- every row of a host goes to shards of that host's *chain*; a chain's shards run one after another in one
  worker (one Beam element), so a host is served by one shard at a time, whatever the number of workers;
- hosts with at most ``rows_per_shard`` rows are packed whole, in order of first appearance, into shards
  (each such shard is a chain of its own); a host with more rows gets a chain of several shards of its own:
  a very large host is spread over time, not over workers;
- within a host, rows with the same normalized URL are adjacent (ordered by the URL's first appearance), so
  a URL is fetched once per shard, and a run of one URL across a shard boundary is handed from one shard to
  the next in the chain: each distinct URL is fetched once per run (a rerun of a killed run may refetch the
  one URL at a boundary).

The plan is a pure function of the input rows in order, so a rerun cuts the same shards.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from wit_builder.core.uid import normalize_url


def url_key(url: str | None) -> str:
    """The identity of a URL for fetching: its normalized form (uid.normalize_url), or the stripped text."""
    text = (url or "").strip()
    with contextlib.suppress(ValueError):
        return normalize_url(text)
    return text


def host_key(url: str | None) -> str:
    """The politeness key of a URL: its lower-case host name without a trailing dot ("" when none)."""
    with contextlib.suppress(ValueError):
        from urllib.parse import urlsplit

        return (urlsplit((url or "").strip()).hostname or "").rstrip(".")
    return ""


@dataclass(frozen=True)
class PlannedShard:
    """One url shard of the plan: its chain and its rows."""

    chain: int                # the shard id of the first shard of its chain
    rows: tuple[int, ...]     # global row numbers (input order over all files), in download order


class HostPlanner:
    """Collects (host, url) per input row, in input order; ``shards`` cuts the plan.

    Memory: 16 bytes per row plus one entry per distinct host (no URL strings are kept).
    """

    def __init__(self) -> None:
        self._host_ids: dict[str, int] = {}
        self._hosts: list[np.ndarray] = []
        self._urls: list[np.ndarray] = []

    def add(self, urls: Iterable[str | None]) -> None:
        """Append the next input rows' URLs (None or unparseable: host "")."""
        hosts, hashes = [], []
        for url in urls:
            host = host_key(url)
            hosts.append(self._host_ids.setdefault(host, len(self._host_ids)))
            digest = hashlib.blake2b(url_key(url).encode("utf-8", "surrogatepass"), digest_size=8).digest()
            hashes.append(int.from_bytes(digest, "little"))
        self._hosts.append(np.asarray(hosts, dtype=np.int64))
        self._urls.append(np.asarray(hashes, dtype=np.uint64))

    @property
    def rows(self) -> int:
        """Rows added so far."""
        return sum(len(a) for a in self._hosts)

    def shards(self, rows_per_shard: int) -> list[PlannedShard]:
        """The plan by the rules of the module docstring: shards of at most ``rows_per_shard`` rows, numbered
        from 0 in run order (a chain's shards consecutive). Raises ValueError for ``rows_per_shard`` < 1."""
        if rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
        if not self.rows:
            return []
        hosts = np.concatenate(self._hosts)
        urls = np.concatenate(self._urls)
        index = np.arange(len(hosts))
        _, first, inverse = np.unique(urls, return_index=True, return_inverse=True)
        url_first = first[inverse.reshape(-1)]
        order = np.lexsort((index, url_first, hosts))  # by host (first appearance), URL group, input order
        sorted_hosts = hosts[order]
        cuts = np.flatnonzero(np.diff(sorted_hosts)) + 1
        starts = np.concatenate(([0], cuts))
        ends = np.concatenate((cuts, [len(order)]))

        shards: list[PlannedShard] = []
        packed: list[np.ndarray] = []
        filled = 0

        def flush() -> None:
            nonlocal packed, filled
            if packed:
                shards.append(PlannedShard(len(shards), tuple(np.concatenate(packed).tolist())))
            packed, filled = [], 0

        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            count = end - start
            if count > rows_per_shard:  # a large host: a chain of its own, run shard after shard
                flush()
                chain = len(shards)
                for at in range(start, end, rows_per_shard):
                    shards.append(PlannedShard(chain, tuple(order[at:min(end, at + rows_per_shard)].tolist())))
                continue
            if filled + count > rows_per_shard:
                flush()
            packed.append(order[start:end])
            filled += count
        flush()
        return shards
