"""wit_builder.core.dedup: banded near-duplicate search against brute force, clusters, decontamination index."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import encode, photo, stored
from wit_builder.core import dedup

hashes64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


def flip_bits(value: int, positions: list[int]) -> int:
    for p in positions:
        value ^= 1 << p
    return value


def test_bands_cover_all_64_bits_evenly():
    for distance in (0, 1, 4, 7, 10, 63):
        covered = dedup.bands(distance)
        assert len(covered) == distance + 1
        assert sum(width for _, width in covered) == 64
        assert covered[0][0] == 0 and all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(covered))
        assert max(w for _, w in covered) - min(w for _, w in covered) <= 1
    with pytest.raises(ValueError, match="0..63"):
        dedup.bands(64)


@settings(max_examples=300, deadline=None)
@given(hashes64, st.integers(0, 8), st.data())
def test_hashes_within_distance_share_a_band(value, distance, data):
    positions = data.draw(st.lists(st.integers(0, 63), max_size=distance, unique=True))
    other = flip_bits(value, positions)
    assert dedup.hamming(value, other) == len(positions)
    shared = set(dedup.band_keys(value, distance)) & set(dedup.band_keys(other, distance))
    assert shared, "pigeonhole: d flipped bits leave at least one of d+1 bands intact"


def brute_force_clusters(members, distance):
    """The reference: every pair within ``distance`` compared, components by a plain union-find."""
    parent = {key: key for key, _ in members}

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for (a, ha), (b, hb) in itertools.combinations(members, 2):
        if dedup.hamming(ha, hb) <= distance:
            ra, rb = find(a), find(b)
            parent[max(ra, rb)] = min(ra, rb)
    return {key[1]: find(key)[1] for key, _ in sorted(members) if find(key) != key}


def banded_clusters(members, distance):
    """What finalize computes: band buckets -> a star per component of each bucket -> union-find; also the
    number of edges the buckets emitted."""
    buckets = {}
    for key, value in members:
        for band_key in dedup.band_keys(value, distance):
            buckets.setdefault(band_key, []).append((key, value))
    forest, edges = dedup.UnionFind(), 0
    for bucket in buckets.values():
        for component in dedup.bucket_components([value for _, value in bucket], distance):
            keys = sorted(bucket[i][0] for i in component)
            for key in keys[1:]:
                forest.union(key, keys[0])
                edges += 1
    return forest.survivors(), edges, max(len(b) for b in buckets.values())


def near_copies(rng, size, distance, blank_band):
    """Adversarial hashes: half near copies (0..distance + 2 bits) of earlier ones, so chains and clusters
    whose members are not all within the distance of one another; the rest random with band 0 cleared when
    ``blank_band`` (one big bucket where unrelated hashes meet, as near-blank images do)."""
    members = []
    for i in range(size):
        if members and rng.random() < 0.5:
            base = members[rng.randrange(len(members))][1]
            value = flip_bits(base, rng.sample(range(64), rng.randint(0, distance + 2)))
        else:
            value = rng.getrandbits(64)
            if blank_band:
                value &= ~((1 << dedup.bands(distance)[0][1]) - 1)
        members.append(((-rng.randrange(4) * 100, f"uid{i:04d}"), value))
    return members


@pytest.mark.parametrize(("size", "distance"), [(40, 4), (300, 4), (300, 0), (200, 10)])
def test_banded_clusters_equal_brute_force_on_adversarial_buckets(size, distance):
    rng = random.Random(size * 100 + distance)
    members = near_copies(rng, size, distance, blank_band=True)
    found, _, biggest = banded_clusters(members, distance)
    assert biggest > size // 3  # the blank band made one big mixed bucket
    expected = brute_force_clusters(members, distance)
    assert found == expected
    assert len(expected) > size // 10  # many true duplicates


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 6), st.data())
def test_banded_clusters_equal_brute_force_on_generated_hashes(distance, data):
    base = data.draw(hashes64)
    # Copies of a few bases, each a few bits off (some beyond the distance): chains and partial cliques.
    values = data.draw(st.lists(st.tuples(st.integers(0, 2), st.lists(st.integers(0, 63), max_size=distance + 3,
                                                                       unique=True)),
                                min_size=1, max_size=40))
    bases = [base, base ^ (1 << 63) ^ 0xFF, ~base & ((1 << 64) - 1)]
    members = [((-(i % 3), f"u{i:03d}"), flip_bits(bases[b], bits)) for i, (b, bits) in enumerate(values)]
    assert banded_clusters(members, distance)[0] == brute_force_clusters(members, distance)


def test_a_near_identical_cluster_costs_linear_edges():
    rng = random.Random(3)
    base, distance, size = rng.getrandbits(64), 4, 3000
    members = [((0, f"u{i:05d}"), flip_bits(base, rng.sample(range(64), rng.randint(0, 2)))) for i in range(size)]
    found, edges, _ = banded_clusters(members, distance)
    assert found == {f"u{i:05d}": "u00000" for i in range(1, size)}
    # A star per band bucket: at most (d + 1)(n - 1) links, where all pairs would be n(n - 1)/2 = 4.5M.
    assert edges <= (distance + 1) * (size - 1)


def test_bucket_components_are_sorted_index_lists_of_two_or_more():
    hashes = [0b1111, 0, 0b1, 0xFFFF_0000_0000_0000, 0b11]
    assert dedup.bucket_components(hashes, 1) == [[1, 2, 4]]  # 0b1111 is 2 bits from 0b11: not within 1
    assert dedup.bucket_components(hashes, 2) == [[0, 1, 2, 4]]
    assert dedup.bucket_components([], 3) == [] and dedup.bucket_components([5], 3) == []


def test_union_find_forests_merge_without_their_edges():
    a, b, c, d, e = (-9, "a"), (-5, "b"), (-5, "c"), (0, "d"), (0, "e")
    left, right = dedup.UnionFind(), dedup.UnionFind()
    left.union(b, c)
    left.union(d, e)
    right.union(c, a)
    left.merge(right)
    assert left.survivors() == {"b": "a", "c": "a", "e": "d"}
    assert left.survivors() == dedup.resolve_clusters([(b, c), (d, e), (c, a)])


def test_resolve_clusters_is_transitive_and_keeps_the_smallest_key():
    a, b, c = (-100, "u3"), (-50, "u1"), (-50, "u2")     # a has the most pixels
    d, e = (0, "u9"), (0, "u8")
    mapping = dedup.resolve_clusters([(b, c), (c, a), (d, e)])
    assert mapping == {"u1": "u3", "u2": "u3", "u9": "u8"}
    # The edge order does not matter.
    assert dedup.resolve_clusters([(e, d), (a, c), (c, b)]) == mapping


def test_survivor_key_prefers_more_pixels_then_smaller_uid():
    keys = [dedup.survivor_key("b", 100, 100), dedup.survivor_key("a", 50, 100), dedup.survivor_key("c", 100, 100)]
    assert min(keys)[1] == "b"
    assert dedup.survivor_key("x", None, None) == (0, "x")


def test_hash_index_matches_brute_force():
    rng = random.Random(7)
    named = [(f"eval/{i}.jpg", f"{rng.getrandbits(64):016x}") for i in range(200)]
    index = dedup.HashIndex.build(named, 4)
    assert len(index) == 200
    for _, phash in named[:50]:
        probe = flip_bits(int(phash, 16), rng.sample(range(64), rng.randint(0, 6)))
        within = sorted((dedup.hamming(probe, int(h, 16)), n) for n, h in named
                        if dedup.hamming(probe, int(h, 16)) <= 4)
        expected = (within[0][1], within[0][0]) if within else None
        assert index.nearest(probe) == expected


def test_phash_finds_a_resized_photo_and_separates_different_photos():
    coffee = photo("coffee")
    full = dedup.phash_to_int(dedup.image_phash(encode(stored(coffee), "JPEG", quality=90)))
    half = coffee.resize((coffee.width // 2, coffee.height // 2))
    resized = dedup.phash_to_int(dedup.image_phash(encode(half, "WEBP", quality=60)))
    assert dedup.hamming(full, resized) <= 4
    for other in ("astronaut", "chelsea", "rocket", "camera"):
        value = dedup.phash_to_int(dedup.image_phash(encode(stored(photo(other)), "PNG")))
        assert dedup.hamming(full, value) > 10, other


def test_phash_to_int_rejects_malformed_hashes():
    with pytest.raises(ValueError, match="16 hex"):
        dedup.phash_to_int("abc")
