"""A mergeable count-min sketch of n-gram counts (Cormode & Muthukrishnan 2005), with deterministic hashing.

``depth`` rows of ``width`` int64 counters. A key adds its count to one counter per row; its estimate is the
smallest of its ``depth`` counters. The estimate never falls below the true count, and exceeds it by more
than ``e / width * N`` (``N``: the total count added) with probability at most ``exp(-depth)``. Two sketches of
the same shape merge by adding their tables, so partial sketches from many workers combine exactly into the
sketch of the whole input.

Stage 1's width (:func:`width_for`): the sketch prunes while ``N / width`` (N: the bigrams added) stays at or below
``--min-bigram-count``; N is estimated from the dumps' size before any work (:func:`estimated_bigrams`), and the
width is the smallest power of two that keeps that ratio, never below :data:`DEFAULT_SKETCH_WIDTH`.

Row ``i``'s counter is ``(h1 + i * h2) mod width`` (Kirsch-Mitzenmacher double hashing), ``h1`` and ``h2``
two CRC-32s of the key's UTF-8 bytes with different seeds: the same on every worker and every run (Python's
``hash`` of a str is salted per process, so it cannot be used). Memory: ``8 * depth * width`` bytes.

On a cluster a sketch travels between workers as :meth:`CountMinSketch.chunks` (flat slices of its table, 1 MiB
each by default) and is rebuilt with :meth:`CountMinSketch.from_chunks`: engines bound the size of one record
(Flink's sorter refuses a record larger than its sort buffer, a 32 MiB sketch among them), and chunks summed per
slice merge exactly as whole sketches do. In-process, stage 1's pair travels as a file instead
(:func:`write_sketches`; summed into one pair in place by :func:`add_sketches_from`, memory-mapped by
:func:`mapped_sketches`): the in-process runner's buffers would hold several copies of every record that crosses
a stage, and issue 25 measured five copies of the sketches at the peak that way.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import BinaryIO

import numpy as np

_SEED = 0x9E3779B9
CHUNK_COUNTERS = 1 << 17  # counters per chunk: 1 MiB of int64
DEFAULT_SKETCH_WIDTH = 1 << 20  # counters per row of stage 1's bigram sketch (4 rows x 8 bytes: 32 MiB)
# Tokens (so bigrams) per byte of dump: the 2024 English multistream dump holds ~4.5e9 tokens of plain text in
# ~22 GB of bz2 (docs/deploy.md); bz2 shrinks MediaWiki XML about 4x, so ~0.05 per byte of plain XML.
BIGRAMS_PER_BYTE = {"bz2": 0.2, "plain": 0.05}


class CountMinSketch:
    """``depth`` x ``width`` int64 counters (``table``, ``8 * depth * width`` bytes); see the module docstring.

    Raises ValueError for ``width`` < 16 or ``depth`` < 1.
    """

    def __init__(self, width: int, depth: int = 4, table: np.ndarray | None = None) -> None:
        if width < 16 or depth < 1:
            raise ValueError(f"sketch width must be >= 16 and depth >= 1, got {width} x {depth}")
        if table is not None and (table.shape != (depth, width) or table.dtype != np.int64):
            raise ValueError(f"a {depth} x {width} sketch needs a ({depth}, {width}) int64 table, "
                             f"got {table.shape} {table.dtype}")
        self.width = width
        self.depth = depth
        # ``table``: counters to use as they are, not copied (e.g. a read-only memory map of a sketch file)
        self.table = np.zeros((depth, width), dtype=np.int64) if table is None else table

    def _columns(self, keys: Sequence[str]) -> np.ndarray:
        """(depth, len(keys)) counter indices."""
        data = [k.encode() for k in keys]
        h1 = np.fromiter((zlib.crc32(b) for b in data), dtype=np.uint64, count=len(data))
        h2 = np.fromiter((zlib.crc32(b, _SEED) | 1 for b in data), dtype=np.uint64, count=len(data))
        rows = np.arange(self.depth, dtype=np.uint64)[:, None]
        return ((h1[None, :] + rows * h2[None, :]) % np.uint64(self.width)).astype(np.int64)

    def add(self, keys: Sequence[str], counts: Iterable[int]) -> None:
        """Add ``counts[i]`` to ``keys[i]``; ``counts`` must yield ``len(keys)`` values (ValueError if fewer)."""
        if not keys:
            return
        columns = self._columns(keys)
        weights = np.fromiter(counts, dtype=np.int64, count=len(keys))
        for row in range(self.depth):
            # In place, exact int64, no row-sized temporary (a bincount of the row made two: float64, then int64);
            # numpy >= 1.25's add.at is also ~50x faster than that at 200k keys into 2^23 counters.
            np.add.at(self.table[row], columns[row], weights)

    def estimate(self, keys: Sequence[str]) -> np.ndarray:
        """Upper bounds of the keys' counts (int64 array, one per key)."""
        if not keys:
            return np.zeros(0, dtype=np.int64)
        columns = self._columns(keys)
        return np.min(self.table[np.arange(self.depth)[:, None], columns], axis=0)

    def merge(self, other: CountMinSketch) -> CountMinSketch:
        """Add ``other``'s counters into these (in place) and return self; ValueError for another shape."""
        if (self.width, self.depth) != (other.width, other.depth):
            raise ValueError("only sketches of the same shape merge")
        self.table += other.table
        return self

    def total(self) -> int:
        """The total count added (every row sums to it)."""
        return int(self.table[0].sum())

    def error_bound(self) -> float:
        """``e / width * N``: the overestimate exceeded with probability at most ``exp(-depth)``."""
        return float(np.e / self.width * self.total())

    def chunks(self, counters: int = CHUNK_COUNTERS) -> Iterator[tuple[int, np.ndarray]]:
        """The table as ``(start, counters)`` pieces: int64 slices of at most ``counters`` counters of the
        row-major flattened ``(depth, width)`` table, starting at flat index ``start``. Slices are copies."""
        if counters < 1:
            raise ValueError(f"chunk size must be >= 1 counter, got {counters}")
        flat = self.table.reshape(-1)
        for start in range(0, flat.size, counters):
            yield start, flat[start:start + counters].copy()

    @classmethod
    def from_chunks(cls, width: int, depth: int, chunks: Mapping[int, np.ndarray]) -> CountMinSketch:
        """The sketch whose :meth:`chunks` are ``{start: counters}``.

        Raises ValueError when the chunks do not tile the ``depth x width`` table exactly (a missing chunk would
        read as zero counts: estimates below the true counts, which the sketch must never give)."""
        sketch = cls(width, depth)
        flat = sketch.table.reshape(-1)
        covered = 0
        for start in sorted(chunks):
            values = chunks[start]
            if start != covered or start + len(values) > flat.size:
                raise ValueError(f"sketch chunks do not tile a {depth} x {width} table: chunk at {start}, "
                                 f"expected one at {covered}")
            flat[start:start + len(values)] = values
            covered = start + len(values)
        if covered != flat.size:
            raise ValueError(f"sketch chunks cover {covered} of {flat.size} counters of a {depth} x {width} table")
        return sketch


class DistinctSketch:
    """How many distinct keys were seen, estimated from the ``k`` smallest of their 64-bit hashes ("k minimum
    values": Bar-Yossef et al. 2002, "Counting distinct elements in a data stream"; Beyer et al. 2007):
    ``n ~ (k - 1) / h_k`` with ``h_k`` the ``k``-th smallest hash scaled to (0, 1]; exact while fewer than ``k``
    keys were seen. Relative standard error about ``1 / sqrt(k - 2)``: 0.8% at the default ``k`` = 16,384.
    Mergeable (the union's ``k`` smallest), deterministic (BLAKE2b of the key's UTF-8 bytes), ``8 k`` bytes.
    The count-min rows are no substitute: their cheap CRC-based columns are far from uniform on similar keys.
    """

    def __init__(self, k: int = 1 << 14) -> None:
        if k < 3:
            raise ValueError(f"k must be >= 3, got {k}")
        self.k = k
        self.hashes = np.zeros(0, dtype=np.uint64)  # sorted, distinct, at most k

    def add(self, keys: Iterable[str]) -> None:
        """Add keys (each counts once however often it is added)."""
        new = np.fromiter((int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
                           for key in keys), dtype=np.uint64)
        if new.size:
            self.hashes = np.unique(np.concatenate([self.hashes, new]))[: self.k]

    def merge(self, other: DistinctSketch) -> DistinctSketch:
        """Take in ``other``'s keys (in place) and return self; ValueError for another ``k``."""
        if other.k != self.k:
            raise ValueError("only distinct sketches of the same k merge")
        self.hashes = np.unique(np.concatenate([self.hashes, other.hashes]))[: self.k]
        return self

    def estimate(self) -> int:
        """The estimated number of distinct keys added (exact below ``k``)."""
        if self.hashes.size < self.k:
            return int(self.hashes.size)
        kth = (float(self.hashes[-1]) + 1.0) / 2.0**64
        return int(round((self.k - 1) / kth))


# ---- stage 1's pair of sketches: (unigram, bigram), the unigram one a quarter as wide ----

def estimated_bigrams(dump_sizes: Iterable[tuple[str, int]]) -> int:
    """Bigrams a set of dumps ((path, size in bytes)) will add, estimated from their size
    (:data:`BIGRAMS_PER_BYTE`; a ``.bz2`` path is compressed, anything else plain XML)."""
    return int(sum(size * BIGRAMS_PER_BYTE["bz2" if path.endswith(".bz2") else "plain"]
                   for path, size in dump_sizes))


def width_for(bigrams: int, min_bigram_count: int) -> int:
    """The bigram sketch width for ``bigrams`` added: the smallest power of two ``w`` >= DEFAULT_SKETCH_WIDTH
    with ``bigrams / w <= min_bigram_count`` (the count-min bound ``e / w * N`` then stays near the threshold, so
    pass 2 counts little beyond the n-grams that reach it: docs/stages/queries.md)."""
    width = DEFAULT_SKETCH_WIDTH
    while bigrams > width * max(min_bigram_count, 1):
        width *= 2
    return width


def sketches_bytes(width: int) -> int:
    """Bytes of one range's (unigram, bigram) sketches for a bigram ``width``: 4 rows of int64 counters each,
    the unigram sketch a quarter as wide (40 bytes per bigram counter)."""
    return 8 * 4 * (width + width // 4)


NgramSketches = tuple[CountMinSketch, CountMinSketch]
ChunkKey = tuple[int, int, int, int]  # (0 unigram / 1 bigram, width, depth, start)


def ngram_sketches(width: int) -> NgramSketches:
    """Empty (unigram, bigram) sketches for a bigram sketch ``width`` counters wide (4 rows each)."""
    return CountMinSketch(width // 4), CountMinSketch(width)


def add_and_clear(sketches: NgramSketches, unigrams: Counter[str], bigrams: Counter[str]) -> None:
    """Add partial counts to the (unigram, bigram) sketches and clear them (a worker's memory stays flat)."""
    for sketch, counts in zip(sketches, (unigrams, bigrams), strict=True):
        sketch.add(list(counts), counts.values())
        counts.clear()


def sketch_chunks(sketches: NgramSketches) -> Iterator[tuple[ChunkKey, np.ndarray]]:
    """A range's (unigram, bigram) sketches -> ((sketch index, width, depth, start), 1 MiB slice) records: one
    whole sketch is 32 MiB at the default width, more than Flink's sorter takes as one record."""
    for index, sketch in enumerate(sketches):
        for start, counters in sketch.chunks():
            yield (index, sketch.width, sketch.depth, start), counters


def assemble_sketches(chunks: Mapping[ChunkKey, np.ndarray]) -> NgramSketches | None:
    """The merged sketch chunks -> the (unigram, bigram) sketches; None when there is no chunk (no range).

    Raises ValueError when the chunks are not of one unigram and one bigram shape, or do not tile them.
    """
    if not chunks:
        return None
    parts: dict[tuple[int, int, int], dict[int, np.ndarray]] = {}
    for (index, width, depth, start), counters in chunks.items():
        parts.setdefault((index, width, depth), {})[start] = counters
    shapes = sorted(parts)
    if [index for index, _, _ in shapes] != [0, 1]:  # every range sketches with the same widths
        raise ValueError(f"expected one unigram and one bigram sketch shape, got {shapes}")
    unigram, bigram = (CountMinSketch.from_chunks(width, depth, parts[(index, width, depth)])
                       for index, width, depth in shapes)
    return unigram, bigram


# ---- a sketch pair as a file (in-process runs: only its name crosses Beam) ----
# Layout: the unigram table, then the bigram table, each 4 rows of little-endian int64 counters, row-major, no
# header: sketches_bytes(width) bytes. The width is the run's (every file of a run has it), so a file of another
# size is refused rather than guessed at.

SKETCH_FILE_DTYPE = np.dtype("<i8")
_IO_COUNTERS = CHUNK_COUNTERS  # counters per read or write (1 MiB): no step holds a second whole sketch


def write_sketches(sketches: NgramSketches, f: BinaryIO) -> None:
    """Write the (unigram, bigram) pair to the binary file ``f`` (layout above) in 1 MiB slices of the tables
    themselves: no copy of a sketch is made."""
    for sketch in sketches:
        flat = sketch.table.reshape(-1)
        if flat.dtype != SKETCH_FILE_DTYPE:  # a big-endian machine: convert (a copy) rather than mis-write
            flat = flat.astype(SKETCH_FILE_DTYPE)
        for start in range(0, flat.size, _IO_COUNTERS):
            f.write(flat[start:start + _IO_COUNTERS].data)


def _slices(sketches: NgramSketches) -> Iterator[np.ndarray]:
    """The pair's flat tables in file order, as writable slices of at most ``_IO_COUNTERS`` counters."""
    for sketch in sketches:
        flat = sketch.table.reshape(-1)
        for start in range(0, flat.size, _IO_COUNTERS):
            yield flat[start:start + _IO_COUNTERS]


def _read_exact(f: BinaryIO, n: int, width: int) -> np.ndarray:
    """The next ``n`` counters of a sketch file; ValueError when the file ends first."""
    data = f.read(8 * n)
    if len(data) != 8 * n:
        raise ValueError(f"a sketch file of bigram width {width} holds {sketches_bytes(width):,} bytes; this one "
                         "ends early (another width, or a file cut short)")
    return np.frombuffer(data, dtype=SKETCH_FILE_DTYPE)


def _check_end(f: BinaryIO, width: int) -> None:
    if f.read(1):
        raise ValueError(f"a sketch file of bigram width {width} holds {sketches_bytes(width):,} bytes; this one "
                         "is longer (another width?)")


def add_sketches_from(sketches: NgramSketches, f: BinaryIO) -> NgramSketches:
    """Add the pair in file ``f`` (written by :func:`write_sketches` at the same width) into ``sketches`` in
    place, 1 MiB at a time, and return them: merging a file costs one slice, not a second sketch.

    Raises ValueError when the file's size is not that of the pair's width."""
    for part in _slices(sketches):
        np.add(part, _read_exact(f, part.size, sketches[1].width), out=part)
    _check_end(f, sketches[1].width)
    return sketches


def read_sketches(width: int, f: BinaryIO) -> NgramSketches:
    """The pair in file ``f`` for a bigram ``width``, read into fresh tables (one sketch's memory, read 1 MiB
    at a time). Raises ValueError when the file's size is not that of ``width``."""
    sketches = ngram_sketches(width)
    for part in _slices(sketches):
        part[:] = _read_exact(f, part.size, width)
    _check_end(f, width)
    return sketches


def mapped_sketches(width: int, path: str) -> NgramSketches:
    """The pair in the local file ``path``, memory-mapped read-only: nothing is copied, pages are read as the
    estimates touch them, and processes mapping one file share its pages. Raises ValueError for a file whose
    size is not that of ``width``."""
    size = os.path.getsize(path)
    if size != sketches_bytes(width):
        raise ValueError(f"sketch file {path} holds {size:,} bytes, not the {sketches_bytes(width):,} of bigram "
                         f"width {width}")
    unigram_width = width // 4
    unigram = np.memmap(path, dtype=SKETCH_FILE_DTYPE, mode="r", shape=(4, unigram_width))
    bigram = np.memmap(path, dtype=SKETCH_FILE_DTYPE, mode="r", shape=(4, width), offset=8 * 4 * unigram_width)
    return (CountMinSketch(unigram_width, 4, unigram.view(np.ndarray)),
            CountMinSketch(width, 4, bigram.view(np.ndarray)))
