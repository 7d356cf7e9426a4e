"""Large intermediate data as files, with only their names crossing Beam: memory set by a unit of work.

The in-process runners (FnApiRunner, DirectRunner, also in multi-processing mode) keep every element that crosses
a fused stage in the launcher's memory (Beam's ``ListBuffer`` / ``GroupingBuffer``), so a stage whose shuffle
carries its data as bytes holds the whole input at once. With a :class:`Spill` folder a DoFn writes each blob to
a file under ``OUT/_tmp_spill/`` and passes on the file's path (a str), and the next step reads it back: Beam
holds names, and a worker holds the one unit (a bucket, a file) it works on.

Names are deterministic (the producing step, its input and the unit: ``matched/<pool file hash>-<flush>``
holding every bucket of one flush, each referenced by its byte range; ``ranked/b<bucket>``),
and each file is written to a temporary name and renamed (``fileio.atomic_create``), so a retried bundle writes
the same bytes under the same name and nothing is doubled. A consumer never deletes what it read (a retried
consumer reads it again); the command removes the whole folder when the run ends, whether it succeeded or not.

A stage whose shuffle carries Beam elements (finalize's records) uses :class:`GroupByKeySpilled` /
:class:`CoGroupByKeySpilled` in place of ``GroupByKey`` / ``CoGroupByKey``: each writer encodes its (key, value)
pairs with the coders the GroupByKey would use, spreads them over buckets (a hash of the key, or a given
function: one shard per bucket) and writes them ``FLUSH_BYTES`` at a time as one file ``STEP/<hash of its
bytes>.bin`` that starts with an index of its buckets' byte ranges; only one reference per file (its path and the
first and last bucket it holds) crosses Beam, as a side input of the step after, which reads one bucket at a time
(its range of every file whose buckets span it), groups it by key and yields what GroupByKey would. Several
inputs are written by one writer each instead of being flattened first (the in-process runner holds a Flatten's
output in memory too). :class:`Materialize` passes a PCollection through files where the runner must hold it
anyway (a step whose side input is computed from the same rows).
Memory: the writers' ``FLUSH_BYTES`` each, one bucket's elements in the reader, and one reference per file:
spilled bytes / ``FLUSH_BYTES``, linear in the rows (10M finalize rows of ~340 encoded bytes per shuffle: ~400
references). A reference per (file, bucket), as a GroupByKey of bucket -> ranges would need, grows as files x
buckets, i.e. with the square of the rows, and the in-process runner holds each at ~0.5 KB (measured by
benchmarks/bench_spill_refs.py: ~0.4M and ~0.2 GB per shuffle at 10M rows, ~37M and ~17 GB at 100M). Reading:
each bucket opens every file whose bucket span covers it (files x buckets opens when keys are hashed; a 16-byte
index read when the bucket is not there).

On a cluster (Dataflow, Spark, Flink) the runner's shuffle already spills to disk and moves data between
machines, so :func:`spill_folder` gives None there and the blobs travel inline as before: same outputs, the
shuffle unchanged.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from wit_builder.beam import fileio
from wit_builder.core.errors import UsageError

SPILL_DIR = "_tmp_spill"  # under --out; removed by the command when the run ends
IN_PROCESS_RUNNERS = frozenset({"", "directrunner", "fnapirunner", "bundlebaseddirectrunner",
                                "switchingdirectrunner", "prismrunner"})

Ref = bytes | str  # a blob inline (bytes), or where a file holds it (str: "PATH" or "PATH@OFFSET+LENGTH")


def spill_folder(runner: str | None, out: str) -> str | None:
    """``OUT/_tmp_spill`` for an in-process runner (``--runner`` name, None or "" for the default), else None."""
    name = (runner or "").rsplit(".", 1)[-1].lower()
    return fileio.join(out, SPILL_DIR) if name in IN_PROCESS_RUNNERS else None


def refuse_link(path: str) -> None:
    """UsageError when the local ``path`` (a folder the command deletes whole: ``OUT/_tmp_spill``, ``OUT/_tmp_text``)
    is a symbolic link: what it points to is not the run's to delete, and deleting it failed with a traceback."""
    local = fileio.local_path_or_none(path)
    if local is not None and os.path.islink(local):
        raise UsageError(f"{path} is a symbolic link (to {os.readlink(local)}); wit deletes that folder at every run "
                         f"and does not follow links: remove the link (the folder's files stay under --out)")


def remove_spill(out: str) -> bool:
    """Delete ``OUT/_tmp_spill``: the folder on a local filesystem, every object below it on an object store
    (``gs://``, ``s3://``: no folders there, so the folder itself never "exists"); whether anything was there.
    UsageError for a symbolic link there (``refuse_link``)."""
    folder = fileio.join(out, SPILL_DIR)
    refuse_link(folder)
    if fileio.exists(folder):
        fileio.delete([folder])
        return True
    objects = fileio.match(fileio.join(folder, "**"))
    fileio.delete(objects)
    return bool(objects)


def stable_name(text: str) -> str:
    """16 hex digits naming ``text`` (e.g. an input path) in a spill file name, the same on every worker."""
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class Spill:
    """Where a step's blobs go: files under ``folder``, or inline when ``folder`` is None. Picklable (a str)."""

    def __init__(self, folder: str | None) -> None:
        self.folder = folder

    def put(self, name: str, data: bytes) -> Ref:
        """``data`` as a reference: the path ``folder/name`` it was written to (temp then rename), or ``data``
        itself without a folder. An empty blob stays inline (nothing to hold)."""
        if self.folder is None or not data:
            return data
        path = fileio.join(self.folder, name)
        fileio.write_bytes(path, data)
        return path

    def put_many(self, name: str, blobs: list[bytes]) -> list[Ref]:
        """Several blobs in one file ``folder/name`` (one file per unit of work, not one per piece: file
        creation dominates for small pieces), each referenced by its byte range; inline without a folder."""
        if self.folder is None:
            return list(blobs)
        path = fileio.join(self.folder, name)
        fileio.write_bytes(path, b"".join(blobs))
        refs: list[Ref] = []
        offset = 0
        for blob in blobs:
            refs.append(f"{path}@{offset}+{len(blob)}" if blob else b"")
            offset += len(blob)
        return refs

    @staticmethod
    def get(ref: Ref) -> bytes:
        """The bytes a reference stands for; FileNotFoundError naming a spill file that is gone."""
        if isinstance(ref, bytes):
            return ref
        path, at, span = ref.rpartition("@")
        if not at or "+" not in span:
            with fileio.open_read(ref) as f:
                return f.read()
        offset, length = (int(x) for x in span.split("+"))
        with fileio.open_read(path) as f:
            f.seek(offset)
            data = f.read(length)
        if len(data) != length:
            raise ValueError(f"spill file {path} is shorter than its reference {ref} (changed during the run)")
        return data

    @staticmethod
    def stem(ref: Ref) -> str:
        """The file name of a spilled reference without its folder, range and suffix ("" for an inline blob): a
        base for the names of what is made from it."""
        if not isinstance(ref, str):
            return ""
        name = ref.rsplit("/", 1)[-1]
        return name.rsplit("@", 1)[0].removesuffix(".arrow") if "@" in name else name.removesuffix(".arrow")


# ---- a spilled GroupByKey / CoGroupByKey: the unit is a bucket of keys ----

FLUSH_BYTES = 8 << 20  # encoded elements one writer holds before it writes them out, as one file
_FRAME = struct.Struct("<BII")  # one spilled element: input tag, key length, value length (then the two byte strings)


def bucket_count(elements: int, per_bucket: int) -> int:
    """Buckets for ``elements`` keyed elements so that one bucket holds about ``per_bucket`` of them: at least 1."""
    return max(1, -(-elements // per_bucket))


def hashed_bucket(encoded_key: bytes, buckets: int) -> int:
    """The bucket of a key by a hash of its encoding: the same on every worker and every run."""
    return int.from_bytes(hashlib.blake2b(encoded_key, digest_size=8).digest(), "little") % buckets


def _kv_coders(pcoll: beam.PCollection) -> tuple[beam.coders.Coder, beam.coders.Coder]:
    """The key and value coders of a PCollection of (key, value) pairs, from its element type (the coders its
    GroupByKey would use); pickling-free primitives when the type is not declared."""
    coder = beam.coders.registry.get_coder(pcoll.element_type)
    if isinstance(coder, beam.coders.TupleCoder) and len(coder.coders()) == 2:
        key, value = coder.coders()
        return key, value
    fallback = beam.coders.FastPrimitivesCoder()
    return fallback, fallback


class _SpillBuckets(beam.DoFn):
    """(key, value) -> one :data:`FileRef` per file: elements encoded into per-bucket blobs, written ``FLUSH_BYTES``
    at a time as one file ``folder/STEP/<hash of its bytes>.bin`` (a retried bundle that makes the same bytes writes
    the same name; one that makes other bytes writes another file, which nothing references). A file is an index
    (:func:`_pack_buckets`) then the buckets' blobs; a blob is frames: ``_FRAME`` (tag, key length, value length),
    key bytes, value bytes."""

    def __init__(self, spill: Spill, step: str, tag: int, buckets: int, coders: tuple[beam.coders.Coder, ...],
                 bucket_of: Callable[[Any], int] | None) -> None:
        super().__init__()
        self._spill, self._step, self._tag, self._buckets = spill, step, tag, buckets
        self._key_coder, self._value_coder = coders
        self._bucket_of = bucket_of
        self._pending: dict[int, list[bytes]] = {}
        self._held = 0

    def start_bundle(self) -> None:
        self._pending, self._held = {}, 0

    def process(self, element: tuple[Any, Any]) -> Iterator[FileRef]:
        key, value = element
        encoded_key, encoded_value = self._key_coder.encode(key), self._value_coder.encode(value)
        bucket = (self._bucket_of(key) if self._bucket_of is not None
                  else hashed_bucket(encoded_key, self._buckets))
        frame = _FRAME.pack(self._tag, len(encoded_key), len(encoded_value)) + encoded_key + encoded_value
        self._pending.setdefault(bucket, []).append(frame)
        self._held += len(frame)
        if self._held >= FLUSH_BYTES:
            yield from self._flush()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for ref in self._flush():
            yield GlobalWindows.windowed_value(ref)

    def _flush(self) -> list[FileRef]:
        if not self._pending:
            return []
        data, first, last = _pack_buckets({b: b"".join(frames) for b, frames in self._pending.items()})
        self._pending, self._held = {}, 0
        path = self._spill.put(f"{self._step}/{hashlib.blake2b(data, digest_size=16).hexdigest()}.bin", data)
        assert isinstance(path, str)  # only used with a spill folder
        return [(path, first, last)]


FileRef = tuple[str, int, int]  # a spilled file: its path, and the first and last bucket its index covers
_SPAN = struct.Struct("<II")  # a spilled file's first bucket and bucket count
_OFFSET = struct.Struct("<Q")


def _pack_buckets(blobs: dict[int, bytes]) -> tuple[bytes, int, int]:
    """One spilled file's bytes for ``blobs`` {bucket: frames}: ``_SPAN`` (first bucket, count), ``count + 1``
    offsets (uint64, little-endian) of each bucket's blob from the end of the index (an absent bucket: an empty
    range), then the blobs in bucket order; and the first and last bucket. Reading one bucket's blob takes one
    16-byte read of the index, whatever the number of buckets."""
    first, last = min(blobs), max(blobs)
    offsets, at = [], 0
    for bucket in range(first, last + 1):
        offsets.append(at)
        at += len(blobs.get(bucket, b""))
    offsets.append(at)
    count = last - first + 1
    index = _SPAN.pack(first, count) + struct.pack(f"<{count + 1}Q", *offsets)
    return index + b"".join(blobs[b] for b in sorted(blobs)), first, last


def _read_bucket(path: str, bucket: int) -> bytes:
    """The frames of ``bucket`` in the spilled file ``path`` (b"" when its index has none); ValueError for a file
    shorter than its index says (changed during the run), FileNotFoundError for one that is gone."""
    with fileio.open_read(path) as f:
        head = f.read(_SPAN.size)
        if len(head) < _SPAN.size:
            raise ValueError(f"spill file {path} has no index (changed during the run)")
        first, count = _SPAN.unpack(head)
        if not first <= bucket < first + count:
            return b""
        f.seek(_SPAN.size + (bucket - first) * _OFFSET.size)
        bounds = f.read(2 * _OFFSET.size)
        if len(bounds) < 2 * _OFFSET.size:
            raise ValueError(f"spill file {path} is shorter than its index (changed during the run)")
        start, end = struct.unpack("<QQ", bounds)
        if end == start:
            return b""
        f.seek(_SPAN.size + (count + 1) * _OFFSET.size + start)
        data = f.read(end - start)
    if len(data) != end - start:
        raise ValueError(f"spill file {path} is shorter than its index says (changed during the run)")
    return data


def _frames(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """The (tag, key bytes, value bytes) of a spilled blob; ValueError for a cut frame (a changed file)."""
    at, end = 0, len(data)
    while at < end:
        tag, key_len, value_len = _FRAME.unpack_from(data, at)
        at += _FRAME.size
        if at + key_len + value_len > end:
            raise ValueError("a spilled blob ends inside an element (the spill file changed during the run)")
        yield tag, data[at: at + key_len], data[at + key_len: at + key_len + value_len]
        at += key_len + value_len


class _GroupBucket(beam.DoFn):
    """bucket (with every file reference as a side input) -> each key of the bucket with its values:
    ``(key, [values])``, or with ``tags`` ``(key, {tag: [values]})`` as CoGroupByKey gives them. Keys come in the
    order of their encoding; values in the order of their files (sorted by path; a file referenced twice, as two
    flushes of equal bytes are, is read twice) and frames. Memory: one bucket's elements."""

    def __init__(self, coders: list[tuple[beam.coders.Coder, beam.coders.Coder]], tags: list[str] | None) -> None:
        super().__init__()
        self._coders, self._tags = coders, tags
        self._refs: Iterable[FileRef] | None = None
        self._sorted: list[FileRef] = []

    def process(self, bucket: int, refs: Iterable[FileRef]) -> Iterator[tuple[Any, Any]]:
        if refs is not self._refs:  # the runner hands the same side input to every bucket: sorted once
            self._refs, self._sorted = refs, sorted(refs)
        groups: dict[bytes, list[list[Any]]] = {}
        width = len(self._coders)
        for path, first, last in self._sorted:
            if not first <= bucket <= last:
                continue  # the file holds no element of this bucket: not opened
            for tag, key, value in _frames(_read_bucket(path, bucket)):
                lists = groups.get(key)
                if lists is None:
                    lists = groups[key] = [[] for _ in range(width)]
                lists[tag].append(self._coders[tag][1].decode(value))
        for key in sorted(groups):
            lists = groups.pop(key)
            decoded = self._coders[0][0].decode(key)
            if self._tags is None:
                yield decoded, [v for values in lists for v in values]
            else:
                yield decoded, dict(zip(self._tags, lists, strict=True))


class _SpilledGrouping(beam.PTransform):
    """The shared body of :class:`GroupByKeySpilled` and :class:`CoGroupByKeySpilled`."""

    def __init__(self, spill: Spill, step: str, buckets: int, bucket_of: Callable[[Any], int] | None,
                 tags: list[str] | None) -> None:
        super().__init__()
        self._spill, self._step, self._buckets, self._bucket_of, self._tags = spill, step, buckets, bucket_of, tags

    def expand(self, inputs: tuple[beam.PCollection, ...]) -> beam.PCollection:
        coders = [_kv_coders(p) for p in inputs]
        # one key encoding for every input, so that equal keys group together: theirs when they agree
        key_coder = coders[0][0] if all(c[0] == coders[0][0] for c in coders) else beam.coders.FastPrimitivesCoder()
        coders = [(key_coder, value) for _, value in coders]
        refs = [
            p | f"Spill{i}" >> beam.ParDo(_SpillBuckets(self._spill, self._step, i, self._buckets, coders[i],
                                                        self._bucket_of))
            for i, p in enumerate(inputs)
        ]
        files = refs | "SpilledRefs" >> beam.Flatten()
        pipeline = inputs[0].pipeline
        # every bucket is read once, with the file references (one per file, not per bucket) as a side input
        return (
            pipeline
            | "Buckets" >> beam.Create(list(range(self._buckets)))
            | "GroupBucket" >> beam.ParDo(_GroupBucket(coders, self._tags), beam.pvalue.AsList(files))
        )


class GroupByKeySpilled(beam.PTransform):
    """``beam.GroupByKey`` of one or several PCollections of (key, value) (a tuple of them is flattened first), with
    the elements spilled to files on the in-process runners: only one reference per file crosses Beam (a side input
    of the step after), and that step holds one bucket of keys at a time. Without a spill folder (a cluster runner)
    it is ``Flatten`` + ``GroupByKey`` as they are. Values of a key come in no promised order (as from GroupByKey); keys
    are encoded by the inputs' key coder (FastPrimitivesCoder when they differ).

    Args:
        spill: where the buckets go (``Spill(None)``: inline, a plain GroupByKey).
        step: the sub-folder of the spill folder for this shuffle (unique per shuffle of a pipeline).
        buckets: how many buckets the keys are spread over (``bucket_count``); memory is one bucket's elements.
        bucket_of: a key's bucket in ``range(buckets)`` (e.g. a shard's number: one shard per bucket); None: a
            hash of the key's encoding.
    """

    def __init__(self, spill: Spill, step: str, buckets: int, bucket_of: Callable[[Any], int] | None = None) -> None:
        super().__init__()
        self._spill, self._step, self._buckets, self._bucket_of = spill, step, buckets, bucket_of

    def expand(self, pcolls):
        inputs = pcolls if isinstance(pcolls, tuple) else (pcolls,)
        if self._spill.folder is None:
            flat = inputs[0] if len(inputs) == 1 else inputs | "Flatten" >> beam.Flatten()
            return flat | "GroupByKey" >> beam.GroupByKey()
        return inputs | "Spilled" >> _SpilledGrouping(self._spill, self._step, self._buckets, self._bucket_of, None)


class CoGroupByKeySpilled(beam.PTransform):
    """``beam.CoGroupByKey`` of a dict {tag: PCollection of (key, value)} -> (key, {tag: [values]}), spilled as
    :class:`GroupByKeySpilled` on the in-process runners (``Spill(None)``: ``beam.CoGroupByKey`` as it is).

    Args:
        spill, step, buckets: as for :class:`GroupByKeySpilled`.
    """

    def __init__(self, spill: Spill, step: str, buckets: int) -> None:
        super().__init__()
        self._spill, self._step, self._buckets = spill, step, buckets

    def expand(self, tagged):
        if self._spill.folder is None:
            return tagged | "CoGroupByKey" >> beam.CoGroupByKey()
        tags = list(tagged)
        return (tuple(tagged[t] for t in tags)
                | "Spilled" >> _SpilledGrouping(self._spill, self._step, self._buckets, None, tags))


def _spill_one(value: Any) -> tuple[None, Any]:
    return None, value


def _read_spilled(ref: FileRef, coder: beam.coders.Coder) -> Iterator[Any]:
    for _, _, value in _frames(_read_bucket(ref[0], 0)):
        yield coder.decode(value)


class Materialize(beam.PTransform):
    """A PCollection through files, as it is (no grouping): for a step the in-process runner cannot fuse with its
    producer (its side input is computed from the same rows), which would otherwise hold every element in
    memory; it then holds file references. Without a spill folder the PCollection passes untouched.

    Args:
        spill: where the elements go.
        step: the sub-folder of the spill folder.
    """

    def __init__(self, spill: Spill, step: str) -> None:
        super().__init__()
        self._spill, self._step = spill, step

    def expand(self, pcoll):
        if self._spill.folder is None:
            return pcoll
        coder = beam.coders.registry.get_coder(pcoll.element_type)
        keyed = pcoll | "Unkeyed" >> beam.Map(_spill_one).with_output_types(
            beam.typehints.Tuple[None, pcoll.element_type])
        return (keyed
                | "SpillElements" >> beam.ParDo(_SpillBuckets(self._spill, self._step, 0, 1,
                                                              (beam.coders.FastPrimitivesCoder(), coder), None))
                | "ReadElements" >> beam.FlatMap(_read_spilled, coder).with_output_types(pcoll.element_type))
