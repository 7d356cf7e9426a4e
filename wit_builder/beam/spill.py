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

On a cluster (Dataflow, Spark, Flink) the runner's shuffle already spills to disk and moves data between
machines, so :func:`spill_folder` gives None there and the blobs travel inline as before: same outputs, the
shuffle unchanged.
"""

from __future__ import annotations

import hashlib

from wit_builder.beam import fileio

SPILL_DIR = "_tmp_spill"  # under --out; removed by the command when the run ends
IN_PROCESS_RUNNERS = frozenset({"", "directrunner", "fnapirunner", "bundlebaseddirectrunner",
                                "switchingdirectrunner", "prismrunner"})

Ref = bytes | str  # a blob inline (bytes), or where a file holds it (str: "PATH" or "PATH@OFFSET+LENGTH")


def spill_folder(runner: str | None, out: str) -> str | None:
    """``OUT/_tmp_spill`` for an in-process runner (``--runner`` name, None or "" for the default), else None."""
    name = (runner or "").rsplit(".", 1)[-1].lower()
    return fileio.join(out, SPILL_DIR) if name in IN_PROCESS_RUNNERS else None


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
