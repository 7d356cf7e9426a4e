"""Shared Beam plumbing: pipeline options with offline defaults, counters, atomic writes via FileSystems."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import io
import json
import logging
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms.window import GlobalWindows

from schemas.stats import json_safe
from wit_builder import errors, progress

# Beam 2.77's default runner tries to download the Prism binary first; name the in-process runner.
DEFAULT_RUNNER = "FnApiRunner"


def pipeline_options(beam_argv: Iterable[str]) -> PipelineOptions:
    """PipelineOptions from pass-through arguments, with ``--runner=FnApiRunner`` unless one is named."""
    argv = list(beam_argv)
    if not any(a == "--runner" or a.startswith("--runner=") for a in argv):
        argv.append(f"--runner={DEFAULT_RUNNER}")
    options = PipelineOptions(argv)
    runner = options.view_as(StandardOptions).runner
    known = {path.rsplit(".", 1)[-1].lower() for path in StandardOptions.ALL_KNOWN_RUNNERS}
    if isinstance(runner, str) and "." not in runner and not {runner.lower(), f"{runner.lower()}runner"} & known:
        near = difflib.get_close_matches(runner, StandardOptions.KNOWN_RUNNER_NAMES, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        names = ", ".join(StandardOptions.KNOWN_RUNNER_NAMES)
        raise errors.UsageError(f"unknown --runner {runner!r}{hint} (one of {names} or a runner class's full name)")
    return options


BEAM_ERRORS_LOG = "beam-errors.log"  # where Beam's own log of a failed DoFn goes when the error is one of ours


class _KeepKnownErrorsOffTerminal(logging.Filter):
    """Beam logs a failed DoFn's error with its traceback before the run fails; when the error is one of the
    project's own (it names the file and record) or Ctrl-C, the launcher prints the one-line message instead and
    Beam's record goes to ``path``."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.kept = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("apache_beam") or record.levelno < logging.ERROR:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        known = errors.known_error_message(exc) if exc is not None else None
        if known is None:
            known = errors.known_error_message(Exception(record.getMessage()))
        interrupted = isinstance(exc, KeyboardInterrupt) or "KeyboardInterrupt" in record.getMessage()
        if known is None and not interrupted:  # Ctrl-C: the launcher says it in one line
            return True
        self.kept += 1
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s").format(record) + "\n")
        return False


def run_pipeline(pipeline: beam.Pipeline, out: str | None = None) -> beam.runners.runner.PipelineResult:
    """Run ``pipeline`` and wait for it: the one launch sequence of every Beam stage.

    A known error (:mod:`wit_builder.errors`) raised inside the run becomes :class:`StageFailed` with its
    message (the CLI exits 1 without a traceback); Beam's own log of it goes to ``OUT/beam-errors.log`` (a temp
    folder when ``out`` is remote). Any other error propagates with its traceback. Ctrl-C propagates as
    KeyboardInterrupt (the CLI exits 130).
    """
    folder = out if out and "://" not in out and os.path.isdir(out) else tempfile.gettempdir()
    keep = _KeepKnownErrorsOffTerminal(os.path.join(folder, BEAM_ERRORS_LOG))
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(keep)
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except Exception as exc:
        message = errors.known_error_message(exc)
        if message is None:
            raise
        where = f" (Beam's log: {keep.path})" if keep.kept else ""
        raise errors.StageFailed(f"{message}{where}") from exc
    finally:
        for handler in handlers:
            handler.removeFilter(keep)
        progress.close_all()  # the bars end before the stage's summary line
    return result


COUNTS = "counts"  # tagged output of a CountingDoFn: (name, n) pairs that become stats.json's counts
COUNTS_FILE = "_counts.json"  # written by WriteCounts, read by the launcher, removed once stats.json is written


class _Count:
    def __init__(self, dofn: CountingDoFn, name: str) -> None:
        self._dofn, self._name = dofn, name

    def inc(self, n: int = 1) -> None:
        self._dofn.count(self._name, n)


class CountingDoFn(beam.DoFn):
    """A DoFn whose counts are data, not only metrics.

    ``self.count(name, n)`` adds to a per-bundle tally and to the Beam counter ``namespace/name`` (monitoring).
    ``finish_bundle`` emits the tally on the tagged output :data:`COUNTS` as ``(name, n)`` pairs. A failed
    bundle's outputs are discarded by the runner and its retry starts a fresh tally, so summing that output
    (:class:`WriteCounts`) counts every record once, on any runner, where attempted metrics would count a
    retried bundle twice. Subclasses that define ``start_bundle``/``finish_bundle`` call ``super()``.
    """

    namespace = "wit"

    def start_bundle(self) -> None:
        """Start an empty tally for the bundle."""
        self._tally: dict[str, int] = {}

    def counter(self, name: str) -> _Count:
        """A handle with Beam's counter interface (``.inc(n=1)``) that counts through :meth:`count`."""
        return _Count(self, name)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to ``name`` in the bundle's tally and to the Beam counter of that name (monitoring)."""
        if not hasattr(self, "_tally"):
            self._tally = {}
        self._tally[name] = self._tally.get(name, 0) + n
        Metrics.counter(self.namespace, name).inc(n)

    def finish_bundle(self) -> Iterator[beam.pvalue.TaggedOutput]:
        """Emit the bundle's tally as ``(name, n)`` on the COUNTS output (dropped with the bundle if it is retried)."""
        tally, self._tally = getattr(self, "_tally", {}), {}
        for name, n in tally.items():
            yield beam.pvalue.TaggedOutput(COUNTS, GlobalWindows.windowed_value((name, n)))


class WriteCounts(beam.PTransform):
    """``(name, n)`` pairs (from any number of COUNTS outputs, flattened) -> ``{name: total}`` in one JSON file.

    The sum is a combiner over the pipeline's own outputs, so it is exact under bundle retries.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def expand(self, pairs):
        return (
            pairs
            | "SumCounts" >> beam.CombinePerKey(sum)
            | "CountsToDict" >> beam.combiners.ToDict()
            | "WriteCountsFile" >> beam.Map(lambda counts, path: write_json(path, dict(sorted(counts.items()))),
                                            self._path)
        )


def read_counts(folder: str, names: Iterable[str] = ()) -> dict[str, int]:
    """The counts a pipeline wrote with :class:`WriteCounts` into ``folder`` (zeros for ``names`` not seen);
    the file is removed after reading (it is rewritten by every run)."""
    path = join(folder, COUNTS_FILE)
    counts = {name: 0 for name in names} | {k: int(v) for k, v in read_json(path).items()}
    FileSystems.delete([path])
    return dict(sorted(counts.items()))


def counters(result: beam.runners.runner.PipelineResult, namespace: str) -> dict[str, int]:
    """Committed values of every counter in ``namespace``, summed over steps, sorted by name (attempted values
    where a runner reports no committed ones: then a retried bundle counts twice, so use these for monitoring
    and cross-checks only; stats come from :class:`WriteCounts`)."""
    totals: dict[str, int] = {}
    for c in result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        totals[c.key.metric.name] = totals.get(c.key.metric.name, 0) + int(value or 0)
    return dict(sorted(totals.items()))


# ---- files, through FileSystems so that gs://, s3:// and hdfs:// work like local paths ----

def join(base: str, *parts: str) -> str:
    """``base`` and ``parts`` joined as the filesystem of ``base`` joins paths (local, gs://, s3://, ...)."""
    return FileSystems.join(base, *parts)


def makedirs(path: str) -> None:
    """Create the folder ``path`` (and its parents) unless it exists; object stores need nothing."""
    if not FileSystems.exists(path):
        FileSystems.mkdirs(path)


def exists(path: str) -> bool:
    """Whether ``path`` (a file, or a folder on a local filesystem) exists."""
    return FileSystems.exists(path)


def expand_patterns(patterns: Iterable[str], what: str = "input") -> list[str]:
    """Every file matching any of ``patterns`` (paths or globs), sorted and deduplicated.

    Local folders are not files: a glob's folders are left out (reading one fails mid-run with
    IsADirectoryError), and a pattern that names only folders raises FileNotFoundError saying so. Raises
    FileNotFoundError naming the first pattern that matches nothing.
    """
    found: set[str] = set()
    for pattern in patterns:
        metadata = FileSystems.match([pattern])[0].metadata_list
        if not metadata:
            raise FileNotFoundError(f"{what} {pattern!r} matches no file")
        files = [m.path for m in metadata if "://" in m.path or not os.path.isdir(m.path)]
        if not files:
            raise FileNotFoundError(f"{what} {pattern!r} is a folder, not a file: name the files in it "
                                    f"(a path or a quoted glob such as '{join(pattern, '*')}')")
        found.update(files)
    return sorted(found)


@contextlib.contextmanager
def open_read(path: str) -> Iterator[BinaryIO]:
    """Open a file for reading, uncompressed as stored (callers choose their own decompression)."""
    from apache_beam.io.filesystem import CompressionTypes

    f = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    try:
        yield f
    finally:
        f.close()


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    """The file's sha256 as 64 hex digits, read in ``chunk``-byte blocks (flat memory)."""
    digest = hashlib.sha256()
    with open_read(path) as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_create(path: str) -> Iterator[BinaryIO]:
    """Write to a temporary name beside ``path`` and rename it into place only when the block succeeds."""
    from apache_beam.io.filesystem import CompressionTypes

    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    f = FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED)
    try:
        yield f
        f.close()
    except BaseException:
        f.close()
        FileSystems.delete([tmp])
        raise
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, then rename)."""
    with atomic_create(path) as f:
        f.write(data)


def write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as UTF-8 JSON (indent 2, sorted keys, trailing newline) atomically: same object, same bytes.
    Non-finite floats are written as strings (``schemas.stats.json_safe``): strict JSON parsers refuse Infinity."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    write_bytes(path, (text + "\n").encode())


def write_parquet(path: str, table: pa.Table) -> None:
    """Write a table atomically; the same table always gives the same bytes."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes(path, buf.getvalue())


def read_json(path: str) -> Any:
    """The JSON document in ``path``; ValueError naming ``path`` for a file that is not UTF-8 JSON (a
    truncated plan.json or stats.json must name itself, not only "Expecting value: line 1 column 1")."""
    with open_read(path) as f:
        data = f.read()
    try:
        return json.loads(data.decode())
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{path}: not a JSON file ({exc})") from exc


def read_json_object(path: str) -> dict[str, Any]:
    """:func:`read_json` for files that hold one JSON object (plan.json, stats.json); ValueError naming
    ``path`` for any other document (a list, a number)."""
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(doc).__name__}")
    return doc


def read_parquet(path: str, schema: pa.Schema | None = None) -> pa.Table:
    """The whole parquet file as a table (read into memory first: works on any filesystem), cast to ``schema``
    when given; pyarrow's errors for a file that is not parquet."""
    with open_read(path) as f:
        table = pq.read_table(io.BytesIO(f.read()), schema=schema)
    return table


def local_path_or_none(path: str) -> str | None:
    """The local filesystem path for ``path``, or None when it lives on a remote filesystem."""
    return None if "://" in path else os.path.abspath(path)
