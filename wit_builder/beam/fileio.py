"""Files through Beam's ``FileSystems``, so that gs://, s3:// and hdfs:// paths work like local ones: path
helpers, atomic writes (temporary name, then rename), JSON and parquet reading and writing."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from schemas.stats import json_safe


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


def match(pattern: str) -> list[str]:
    """The paths matching the glob ``pattern`` (``**`` crosses folders), as the filesystem lists them; ``[]``
    when nothing matches (:func:`expand_patterns` is for inputs that must exist)."""
    return [m.path for m in FileSystems.match([pattern])[0].metadata_list]


def size(path: str) -> int:
    """The size of the file ``path`` in bytes; FileNotFoundError naming it when it does not exist."""
    found = FileSystems.match([path])[0].metadata_list
    if not found:
        raise FileNotFoundError(f"{path} does not exist")
    return found[0].size_in_bytes


def delete(paths: Iterable[str]) -> None:
    """Delete the files ``paths`` (nothing to do for none)."""
    paths = list(paths)
    if paths:
        FileSystems.delete(paths)


def expand_patterns(patterns: Iterable[str], what: str = "input") -> list[str]:
    """Every file matching any of ``patterns`` (paths or globs), sorted and deduplicated.

    Local folders are not files: a glob's folders are left out (reading one fails mid-run with
    IsADirectoryError), and a pattern that names only folders raises FileNotFoundError saying so. Raises
    FileNotFoundError naming the first pattern that matches nothing.
    """
    found: set[str] = set()
    for pattern in patterns:
        paths = match(pattern)
        if not paths:
            raise FileNotFoundError(f"{what} {pattern!r} matches no file")
        files = [path for path in paths if "://" in path or not os.path.isdir(path)]
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


def take_counts(path: str) -> dict[str, int]:
    """The ``{name: n}`` table a ``counting.WriteCounts`` step wrote to ``path``, sorted by name; the file is removed
    once read (a hand-over from the pipeline to the command: every run writes it again). ValueError naming
    ``path`` for a file that is not a JSON object."""
    table = {str(name): int(n) for name, n in read_json_object(path).items()}
    delete([path])
    return dict(sorted(table.items()))


def read_parquet(path: str, schema: pa.Schema | None = None) -> pa.Table:
    """The whole parquet file as a table (read into memory first: works on any filesystem), cast to ``schema``
    when given; pyarrow's errors for a file that is not parquet."""
    with open_read(path) as f:
        table = pq.read_table(io.BytesIO(f.read()), schema=schema)
    return table


def local_path_or_none(path: str) -> str | None:
    """The local filesystem path for ``path``, or None when it lives on a remote filesystem."""
    return None if "://" in path else os.path.abspath(path)
