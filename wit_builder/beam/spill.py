"""Large intermediate data as files, with only their names crossing Beam: memory set by a unit of work.

The in-process runners (FnApiRunner, DirectRunner, also in multi-processing mode) keep every element that crosses
a fused stage in the launcher's memory (Beam's ``ListBuffer`` / ``GroupingBuffer``), so a stage whose shuffle
carries its data as bytes holds the whole input at once. With a :class:`Spill` folder a DoFn writes each blob to
a file under ``OUT/_tmp_spill/`` and passes on the file's path (a str), and the next step reads it back: Beam
holds names, and a worker holds the one unit (a bucket, a file) it works on.

Names are deterministic (the producing step, its input and the unit: ``matched/<file hash>-<n>-b<bucket>``),
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

Ref = bytes | str  # a blob inline (bytes) or the path of the file that holds it (str)


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

    @staticmethod
    def get(ref: Ref) -> bytes:
        """The bytes a reference stands for; FileNotFoundError naming a spill file that is gone."""
        if isinstance(ref, bytes):
            return ref
        with fileio.open_read(ref) as f:
            return f.read()

    @staticmethod
    def stem(ref: Ref) -> str:
        """The file name of a spilled reference without its folder and suffix ("" for an inline blob): a base for
        the names of what is made from it."""
        return ref.rsplit("/", 1)[-1].removesuffix(".arrow") if isinstance(ref, str) else ""
