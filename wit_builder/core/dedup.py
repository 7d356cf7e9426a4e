"""Duplicate detection for stage 4: exact (sha256), near (pHash Hamming distance) and decontamination.

Near duplicates are found with banded keys (multi-index hashing): the 64-bit pHash is cut into
``distance + 1`` bands. Two hashes within Hamming distance ``d`` differ in at most ``d`` bits, so by the
pigeonhole principle at least one of the ``d + 1`` bands is identical. Grouping by (band, band value) gives
candidate buckets; only pairs inside a bucket are compared, never all pairs. A pair that agrees on several
bands is reported only by the first of them, so each edge appears once.

Duplicates form clusters (union-find over the edges, so A~B and B~C put A, B, C together) and each cluster
keeps one survivor, chosen deterministically by ``survivor_key``: the largest original image, then the
smallest uid.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

PHASH_BITS = 64
# Above this bucket size the pairwise comparison runs vectorized in numpy.
_VECTORIZE_FROM = 64


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


def first_shared_band(a: int, b: int, distance: int) -> int | None:
    """The lowest band index on which ``a`` and ``b`` agree exactly, or None."""
    for (i, value_a), (_, value_b) in zip(band_keys(a, distance), band_keys(b, distance), strict=True):
        if value_a == value_b:
            return i
    return None


def bucket_pairs(band: int, members: Sequence[tuple[str, int]], distance: int) -> list[tuple[str, str]]:
    """Pairs (uid_a, uid_b), uid_a < uid_b, of one band bucket within ``distance``, reported only when
    ``band`` is the first band the two hashes share (so a pair found in several buckets is emitted once)."""
    members = sorted(members)
    uids = [m[0] for m in members]
    hashes = np.array([m[1] for m in members], dtype=np.uint64)
    out: list[tuple[str, str]] = []
    for i in range(len(members) - 1):
        close: list[int]
        if len(members) >= _VECTORIZE_FROM:
            close = (np.nonzero(np.bitwise_count(hashes[i + 1:] ^ hashes[i]) <= distance)[0] + i + 1).tolist()
        else:
            close = [j for j in range(i + 1, len(members)) if hamming(members[i][1], members[j][1]) <= distance]
        for j in close:
            if first_shared_band(members[i][1], members[int(j)][1], distance) == band:
                out.append((uids[i], uids[int(j)]))
    return out


def survivor_key(uid: str, original_width: int | None, original_height: int | None) -> tuple[int, str]:
    """Sort key of a duplicate cluster member; the smallest survives: the most original pixels, then the
    smallest uid (uids are stable hashes, so this is a deterministic, content-independent tie-break)."""
    return (-(original_width or 0) * (original_height or 0), uid)


def resolve_clusters(edges: Iterable[tuple[tuple[int, str], tuple[int, str]]]) -> dict[str, str]:
    """Union-find over edges between survivor keys; maps every non-survivor uid to its cluster's survivor uid."""
    parent: dict[tuple[int, str], tuple[int, str]] = {}

    def find(x: tuple[int, str]) -> tuple[int, str]:
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            # The smaller key is the root, so every root is its cluster's survivor.
            parent[max(ra, rb)] = min(ra, rb)
    return {node[1]: find(node)[1] for node in sorted(parent) if find(node) != node}


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
