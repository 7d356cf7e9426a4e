"""Count-min sketch and the two-pass rule for exact n-gram counts (issue 10)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from wit_builder.queries import ngram_sketch
from wit_builder.queries import selection as qs
from wit_builder.queries.ngram_sketch import (
    CountMinSketch,
    add_and_clear,
    add_sketches_from,
    assemble_sketches,
    mapped_sketches,
    ngram_sketches,
    read_sketches,
    sketch_chunks,
    sketches_bytes,
    write_sketches,
)


def _zipf_text(n_tokens: int, vocabulary: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    ranks = np.minimum(rng.zipf(1.2, n_tokens), vocabulary)
    return [f"w{r}" for r in ranks]


def test_estimates_never_fall_short_and_stay_within_the_bound():
    tokens = _zipf_text(200_000, 50_000, 1)
    counts = Counter(tokens)
    sketch = CountMinSketch(4096)
    keys = list(counts)
    sketch.add(keys, counts.values())
    est = sketch.estimate(keys)
    true = np.array([counts[k] for k in keys])
    assert (est >= true).all()
    assert sketch.total() == len(tokens)
    over = est - true
    assert np.mean(over > sketch.error_bound()) <= np.exp(-4) * 2  # at most ~exp(-depth) of the keys
    top = np.argsort(-true)[:100]
    assert (over[top] <= 0.1 * true[top]).all()  # frequent keys: estimates within 10%


def test_merge_equals_one_sketch_of_everything_and_hash_is_deterministic():
    a, b, whole = CountMinSketch(1024), CountMinSketch(1024), CountMinSketch(1024)
    a.add(["x y", "x"], [3, 1])
    b.add(["x y", "ñ ü"], [2, 5])
    whole.add(["x y", "x", "ñ ü"], [5, 1, 5])
    assert (a.merge(b).table == whole.table).all()
    again = CountMinSketch(1024)
    again.add(["x y"], [1])
    assert int(again.estimate(["x y"])[0]) == 1 and again.table.sum() == 4  # one counter per row
    with pytest.raises(ValueError):
        a.merge(CountMinSketch(2048))
    big = CountMinSketch(64)
    big.add([f"k{i}" for i in range(100)], [1] * 100)  # the bincount path
    assert big.total() == 100


@pytest.mark.parametrize("width", [64, 1024, 1 << 16])
def test_keep_ngrams_keeps_every_ngram_that_can_pass_with_its_exact_count(width):
    """Whatever the sketch's width (the smaller, the noisier), nothing over a threshold is lost."""
    tokens = _zipf_text(50_000, 5_000, 7)
    lines = [tokens[i:i + 20] for i in range(0, len(tokens), 20)]
    unigrams, bigrams = Counter(), Counter()
    for line in lines:
        qs.count_ngrams(" ".join(line), unigrams, bigrams)
    t = qs.Thresholds(min_unigram_count=20, min_bigram_count=5)
    sketches = CountMinSketch(width), CountMinSketch(width)
    sketches[0].add(list(unigrams), unigrams.values())
    sketches[1].add(list(bigrams), bigrams.values())
    rare_word = next(w for w, n in unigrams.items() if n == 1 and w.startswith("w4"))
    rare_pair = next(b for b, n in bigrams.items() if n == 1)
    phrases = frozenset({rare_pair, rare_word})
    kept_u, kept_b = qs.keep_ngrams(unigrams, bigrams, *sketches, t, phrases)
    kept_u, kept_b = dict(kept_u), dict(kept_b)
    assert {w: n for w, n in unigrams.items() if n >= 5} == {w: n for w, n in kept_u.items() if n >= 5}
    assert kept_u[rare_word] == 1 and kept_b[rare_pair] == 1  # title / WordNet phrases: always exact
    assert all(kept_u[w] == n for w, n in unigrams.items() if n >= 5)
    assert all(kept_b[b] == n for b, n in bigrams.items() if n >= 5)
    if width * 5 >= len(tokens):  # N / width under the threshold: most distinct bigrams are not held
        assert len(kept_b) < 3 * sum(1 for n in bigrams.values() if n >= 5) < len(bigrams) / 5


def test_chunks_rebuild_the_sketch_and_summed_chunks_merge_sketches():
    """Sketches travel as 1 MiB slices (engines bound one record's size); slices summed place by place give the
    merged sketch, and a missing or overlapping slice is refused (it would under-count)."""
    parts = [CountMinSketch(1000, 3) for _ in range(2)]
    parts[0].add(["a", "b", "c"], [5, 1, 2])
    parts[1].add(["a", "d"], [1, 7])
    summed: dict[int, np.ndarray] = {}
    for part in parts:
        for start, counters in part.chunks(counters=256):  # 3000 counters: 11 full slices and one of 184
            assert len(counters) <= 256
            summed[start] = summed[start] + counters if start in summed else counters
    assert len(summed) == 12
    rebuilt = CountMinSketch.from_chunks(1000, 3, summed)
    merged = CountMinSketch(1000, 3).merge(parts[0]).merge(parts[1])
    assert np.array_equal(rebuilt.table, merged.table)
    assert rebuilt.estimate(["a", "d"]).tolist() == merged.estimate(["a", "d"]).tolist()
    assert rebuilt.estimate(["a"])[0] >= 6
    _, first = next(parts[0].chunks())
    first += 99  # slices are copies: a combiner summing into one leaves the sketch it came from alone
    assert parts[0].table.max() == 5

    missing = dict(summed)
    del missing[512]
    with pytest.raises(ValueError, match="do not tile"):
        CountMinSketch.from_chunks(1000, 3, missing)
    with pytest.raises(ValueError, match="cover 2816 of 3000"):
        CountMinSketch.from_chunks(1000, 3, {k: v for k, v in summed.items() if k != 2816})
    with pytest.raises(ValueError, match="do not tile"):
        CountMinSketch.from_chunks(1000, 3, {**summed, 100: np.zeros(10, dtype=np.int64)})


def test_a_ranges_sketch_pair_travels_as_chunks_and_is_rebuilt():
    """Stage 1's (unigram, bigram) pair: partial counts flushed into it (and cleared), cut into keyed chunks,
    chunks of several ranges summed per key, then rebuilt into the merged pair."""
    ranges = [ngram_sketches(4096) for _ in range(2)]
    assert [(s.width, s.depth) for s in ranges[0]] == [(1024, 4), (4096, 4)]
    for sketches, text in zip(ranges, ["new york is big", "new york new york"], strict=True):
        unigrams, bigrams = Counter(), Counter()
        qs.count_ngrams(text, unigrams, bigrams)
        add_and_clear(sketches, unigrams, bigrams)
        assert not unigrams and not bigrams
    summed: dict = {}
    for sketches in ranges:
        for key, counters in sketch_chunks(sketches):
            summed[key] = summed[key] + counters if key in summed else counters
    assert {key[:3] for key in summed} == {(0, 1024, 4), (1, 4096, 4)}
    unigram, bigram = assemble_sketches(summed)
    assert min(unigram.estimate(["new", "york"]).tolist()) >= 3 and bigram.estimate(["new york"])[0] >= 3
    assert unigram.total() == 8 and bigram.total() == 6
    assert assemble_sketches({}) is None  # no range: nothing to rebuild
    with pytest.raises(ValueError, match="one unigram and one bigram sketch shape"):
        assemble_sketches({k: v for k, v in summed.items() if k[0] == 0})


def _pair(width: int, text: str):
    sketches = ngram_sketches(width)
    unigrams, bigrams = Counter(), Counter()
    qs.count_ngrams(text, unigrams, bigrams)
    add_and_clear(sketches, unigrams, bigrams)
    return sketches


def test_a_sketch_pair_file_reads_back_merges_in_place_and_maps(tmp_path):
    """In-process runs move the pair as a file: it reads back equal, adds into another pair in place (the same
    tables as ``merge``), memory-maps read-only with the same estimates, and a file of another width or cut
    short is refused (a wrong table would give estimates below the true counts)."""
    width = 1 << 18  # 2^20 counters over both tables: the 1 MiB slices of reads and writes are several
    first, second = _pair(width, "new york is big"), _pair(width, "new york new york")
    paths = [tmp_path / "first.i64", tmp_path / "second.i64"]
    for sketches, path in zip((first, second), paths, strict=True):
        with open(path, "wb") as f:
            write_sketches(sketches, f)
    assert [p.stat().st_size for p in paths] == [sketches_bytes(width)] * 2
    with open(paths[0], "rb") as f:
        merged = read_sketches(width, f)
    assert all(np.array_equal(a.table, b.table) for a, b in zip(merged, first, strict=True))
    tables = [s.table for s in merged]
    with open(paths[1], "rb") as f:
        assert add_sketches_from(merged, f) is merged
    assert all(s.table is t for s, t in zip(merged, tables, strict=True))  # summed into, not replaced
    expected = [a.merge(b) for a, b in zip(_pair(width, "new york is big"), second, strict=True)]
    assert all(np.array_equal(a.table, b.table) for a, b in zip(merged, expected, strict=True))
    assert merged[1].estimate(["new york"])[0] >= 3 and merged[1].total() == 6

    mapped = mapped_sketches(width, str(paths[0]))
    assert isinstance(mapped[1].table, np.ndarray) and not mapped[1].table.flags.writeable
    assert mapped[0].estimate(["new", "york", "big"]).tolist() == first[0].estimate(["new", "york", "big"]).tolist()
    assert mapped[1].estimate(["new york"]).tolist() == first[1].estimate(["new york"]).tolist()

    with pytest.raises(ValueError, match="ends early"), open(paths[0], "rb") as f:
        read_sketches(width * 2, f)
    with pytest.raises(ValueError, match="is longer"), open(paths[0], "rb") as f:
        read_sketches(width // 2, f)
    with pytest.raises(ValueError, match="not the"):
        mapped_sketches(width * 2, str(paths[0]))
    cut = tmp_path / "cut.i64"
    cut.write_bytes(paths[0].read_bytes()[:-8])
    with pytest.raises(ValueError, match="ends early"), open(cut, "rb") as f:
        add_sketches_from(_pair(width, "x y"), f)
    with pytest.raises(ValueError, match="int64 table"):
        CountMinSketch(16, 4, np.zeros((4, 16), dtype=np.int32))


def test_width_for_keeps_bigrams_per_counter_at_most_the_threshold_from_the_default_up():
    assert ngram_sketch.width_for(0, 30) == ngram_sketch.DEFAULT_SKETCH_WIDTH
    assert ngram_sketch.width_for(30 << 20, 30) == 1 << 20  # exactly the threshold per counter
    assert ngram_sketch.width_for((30 << 20) + 1, 30) == 1 << 21
    # The full English Wikipedia: ~22 GB of bz2 -> ~4.4e9 bigrams -> 2^28 counters (N / W ~ 16 <= 30).
    bigrams = ngram_sketch.estimated_bigrams([("enwiki-pages-articles-multistream.xml.bz2", 22 * 10**9)])
    assert bigrams == int(22e9 * 0.2) and ngram_sketch.width_for(bigrams, 30) == 1 << 28
    assert ngram_sketch.estimated_bigrams([("a.xml", 1000), ("b.xml.bz2", 1000)]) == 250
    assert ngram_sketch.sketches_bytes(1 << 20) == 40 << 20  # 32 MiB bigram + 8 MiB unigram sketch
    unigram, bigram = ngram_sketch.ngram_sketches(1 << 20)
    assert unigram.table.nbytes + bigram.table.nbytes == ngram_sketch.sketches_bytes(1 << 20)
