"""Duplicate detection for stage 4: exact (sha256), near (pHash Hamming distance) and decontamination.

Near duplicates are found with banded keys (multi-index hashing): the 64-bit pHash is cut into
``distance + 1`` bands. Two hashes within Hamming distance ``d`` differ in at most ``d`` bits, so by the
pigeonhole principle at least one of the ``d + 1`` bands is identical. Grouping by (band, band value) gives
candidate buckets; only hashes inside a bucket are compared, never all pairs of the input.

Duplicates form clusters: the connected components of the graph "within ``d`` bits" (A~B and B~C put A, B, C
together), and each cluster keeps one survivor, chosen deterministically by ``survivor_key``: the largest
original image, then the smallest uid. The work is linear in the size of a cluster, never quadratic:

- inside a bucket, :func:`bucket_components` finds the components of the bucket's graph by a search that
  removes each reached hash from the unreached set (a bucket of n near-identical hashes costs one
  vectorized pass, not n^2/2 comparisons), and the bucket reports one star per component (every member
  linked to the component's smallest key: n - 1 links, not n^2/2 pairs);
- every edge of the graph lies inside some bucket (pigeonhole), and a star spans the same component as the
  edges it replaces, so the union of the buckets' stars has the same connected components as all pairs;
- :class:`UnionFind` merges the stars: its state is one entry per image that has a near duplicate (never one
  per pair), and two forests merge without their edges (the combiner in ``finalize/pipeline.py``).

The reference is the brute-force graph of all pairs within ``d`` (tests/core/test_dedup.py compares both on
generated adversarial buckets).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

PHASH_BITS = 64


def phash_to_int(phash: str) -> int:
    """The 64-bit integer of a 16-hex-digit pHash (imagehash's ``str()`` form)."""
    if len(phash) != 16:
        raise ValueError(f"pHash {phash!r} is not 16 hex digits")
    return int(phash, 16)


def hamming(a: int, b: int) -> int:
    """The Hamming distance of two 64-bit hashes, in bits."""
    return (a ^ b).bit_count()


def image_phash(data: bytes) -> str:
    """imagehash's 64-bit pHash of encoded image bytes, as 16 hex digits (EXIF orientation applied)."""
    import imagehash
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as img:
        return str(imagehash.phash(ImageOps.exif_transpose(img)))


def bands(distance: int) -> list[tuple[int, int]]:
    """(shift, width) of the ``distance + 1`` bands that cover the 64 bits as evenly as possible."""
    if not 0 <= distance < PHASH_BITS:
        raise ValueError(f"pHash distance must be in 0..{PHASH_BITS - 1}, got {distance}")
    count = distance + 1
    widths = [PHASH_BITS // count + (1 if i < PHASH_BITS % count else 0) for i in range(count)]
    out, shift = [], 0
    for width in widths:
        out.append((shift, width))
        shift += width
    return out


def band_keys(phash: int, distance: int) -> list[tuple[int, int]]:
    """The (band index, band value) keys of a hash; two hashes within ``distance`` share at least one."""
    return [(i, (phash >> shift) & ((1 << width) - 1)) for i, (shift, width) in enumerate(bands(distance))]


def bucket_components(hashes: Sequence[int], distance: int) -> list[list[int]]:
    """The connected components (of two or more members) of one bucket's graph "within ``distance`` bits".

    ``hashes`` are 64-bit pHashes; a component is a list of indices into ``hashes``, ascending, and the
    components come in the order of their smallest index. A breadth-first search from each unreached hash
    compares the hash it visits with the still unreached ones only (vectorized), and removes those it reaches:
    a bucket of n hashes all within ``distance`` of one another costs O(n); memory is O(n) always. Worst
    case (n hashes none of which are near) is n^2/2 comparisons, as comparing all pairs.
    """
    values = np.asarray(hashes, dtype=np.uint64)
    unreached = np.arange(len(values))
    components: list[list[int]] = []
    while unreached.size:
        start, unreached = int(unreached[0]), unreached[1:]
        component, frontier = [start], [start]
        while frontier and unreached.size:
            node = frontier.pop()
            near = np.bitwise_count(values[unreached] ^ values[node]) <= distance
            if near.any():
                reached = unreached[near].tolist()
                unreached = unreached[~near]
                component += reached
                frontier += reached
        if len(component) > 1:
            components.append(sorted(component))
    return components


def survivor_key(uid: str, original_width: int | None, original_height: int | None) -> tuple[int, str]:
    """Sort key of a duplicate cluster member; the smallest survives: the most original pixels, then the
    smallest uid (uids are stable hashes, so this is a deterministic, content-independent tie-break)."""
    return (-(original_width or 0) * (original_height or 0), uid)


Node = tuple[int, str]  # a survivor key


class UnionFind:
    """Disjoint sets of survivor keys (``survivor_key``) where every root is its set's smallest key.

    Memory: one parent entry per key ever linked (an image with a near duplicate), however many edges named
    it. ``merge`` joins another forest through its (key, parent) links, so forests built apart (one per
    bundle, one per worker) combine without the edges they came from.
    """

    def __init__(self) -> None:
        self.parent: dict[Node, Node] = {}

    def find(self, x: Node) -> Node:
        """The root (smallest key) of ``x``'s set; ``x`` joins the forest as a singleton when new."""
        root = x
        while self.parent.setdefault(root, root) != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: Node, b: Node) -> None:
        """Put ``a`` and ``b`` in one set."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # The smaller key is the root, so every root is its cluster's survivor.
            self.parent[max(ra, rb)] = min(ra, rb)

    def merge(self, other: UnionFind) -> None:
        """Add every link of ``other`` (its sets join this forest's)."""
        for node, parent in other.parent.items():
            if node != parent:
                self.union(node, parent)

    def survivors(self) -> dict[str, str]:
        """Every non-survivor uid -> its cluster's survivor uid (sorted by key)."""
        return {node[1]: root[1] for node in sorted(self.parent) if (root := self.find(node)) != node}


def resolve_clusters(edges: Iterable[tuple[Node, Node]]) -> dict[str, str]:
    """Union-find over edges between survivor keys; maps every non-survivor uid to its cluster's survivor uid."""
    forest = UnionFind()
    for a, b in edges:
        forest.union(a, b)
    return forest.survivors()


@dataclass
class HashIndex:
    """Banded index of named hashes (e.g. evaluation images) for "is anything within ``distance``?" lookups."""

    distance: int
    names: list[str] = field(default_factory=list)
    hashes: list[int] = field(default_factory=list)
    buckets: dict[tuple[int, int], list[int]] = field(default_factory=dict)

    @classmethod
    def build(cls, named_hashes: Iterable[tuple[str, str]], distance: int) -> HashIndex:
        """The index of (name, 16-hex-digit pHash) pairs for lookups within ``distance`` bits; ValueError for
        a malformed pHash or a distance out of range."""
        index = cls(distance)
        for name, phash in sorted(named_hashes):
            value = phash_to_int(phash)
            index.names.append(name)
            index.hashes.append(value)
            for key in band_keys(value, distance):
                index.buckets.setdefault(key, []).append(len(index.names) - 1)
        return index

    def nearest(self, phash: int) -> tuple[str, int] | None:
        """(name, distance) of the closest indexed hash within ``distance`` (ties: smallest name), or None."""
        best: tuple[int, str] | None = None
        for key in band_keys(phash, self.distance):
            for i in self.buckets.get(key, ()):
                d = hamming(phash, self.hashes[i])
                if d <= self.distance and (best is None or (d, self.names[i]) < best):
                    best = (d, self.names[i])
        return None if best is None else (best[1], best[0])

    def __len__(self) -> int:
        return len(self.names)
