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
    assert dedup.first_shared_band(value, other, distance) == min(band for band, _ in shared)


def brute_force_pairs(members, distance):
    return {tuple(sorted((a[0], b[0]))) for a, b in itertools.combinations(members, 2)
            if dedup.hamming(a[1], b[1]) <= distance}


def max_bucket(members, distance):
    sizes = {}
    for _, value in members:
        for key in dedup.band_keys(value, distance):
            sizes[key] = sizes.get(key, 0) + 1
    return max(sizes.values())


def banded_pairs(members, distance):
    buckets = {}
    for uid, value in members:
        for key in dedup.band_keys(value, distance):
            buckets.setdefault(key, []).append((uid, value))
    found = []
    for (band, _), bucket in buckets.items():
        found += dedup.bucket_pairs(band, bucket, distance)
    return found


@pytest.mark.parametrize("size", [40, 300])  # 300: big buckets take the vectorized path
def test_banded_search_equals_brute_force_and_reports_each_pair_once(size):
    rng = random.Random(size)
    distance = 4
    members = []
    for i in range(size):
        if members and rng.random() < 0.5:  # a near copy of an earlier hash, 0..6 bits away
            base = members[rng.randrange(len(members))][1]
            value = flip_bits(base, rng.sample(range(64), rng.randint(0, 6)))
        else:
            # Band 0 (the low 13 bits) cleared: one big bucket where unrelated hashes meet.
            value = rng.getrandbits(64) & ~0x1FFF
        members.append((f"uid{i:04d}", value))
    found = banded_pairs(members, distance)
    assert (size >= 300) == (max_bucket(members, distance) >= dedup._VECTORIZE_FROM)
    assert len(found) == len(set(found)), "a pair sharing several bands must be reported once"
    expected = brute_force_pairs(members, distance)
    assert set(found) == expected
    assert len(expected) > size // 4  # the test exercises many true pairs


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
