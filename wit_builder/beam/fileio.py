"""Files through Beam's ``FileSystems``, so that gs://, s3:// and hdfs:// paths work like local ones: path
helpers, atomic writes (temporary name, then rename), JSON and parquet reading and writing."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from schemas.stats import json_safe
from wit_builder.core import errors, run_folder

# The most files one input pattern may name: a mistyped glob must fail with a message, not fill the memory.
MAX_PATTERN_FILES = 1_000_000


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


def match(pattern: str, limit: int | None = None) -> list[str]:
    """The paths matching the glob ``pattern`` (``**`` crosses folders), as the filesystem lists them, at most
    ``limit`` of them; ``[]`` when nothing matches (:func:`expand_patterns` is for inputs that must exist)."""
    limits = None if limit is None else [limit]
    return [m.path for m in FileSystems.match([pattern], limits)[0].metadata_list]


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
    IsADirectoryError), and a pattern that names only folders raises FileNotFoundError saying so. Our own
    temporaries (``*.tmp-<hex>``, a killed writer's) are never inputs. Raises FileNotFoundError naming the first
    pattern that matches nothing; ValueError naming a local input that is not a regular file (a named pipe or a
    device would block the run forever) and a pattern that names more than :data:`MAX_PATTERN_FILES` files.
    """
    found: set[str] = set()
    for pattern in patterns:
        paths = [p for p in match(pattern, limit=MAX_PATTERN_FILES + 1) if not run_folder.is_temporary(p)]
        if not paths:
            raise FileNotFoundError(f"{what} {pattern!r} matches no file")
        if len(paths) > MAX_PATTERN_FILES:
            raise ValueError(f"{what} {pattern!r} names more than {MAX_PATTERN_FILES:,} files; name fewer (split the "
                             "run) or check the pattern")
        files = [path for path in paths if "://" in path or not os.path.isdir(path)]
        if not files:
            raise FileNotFoundError(f"{what} {pattern!r} is a folder, not a file: name the files in it "
                                    f"(a path or a quoted glob such as '{join(pattern, '*')}')")
        for path in files:
            check_regular_file(path, what)
        found.update(files)
    return sorted(found)


def check_regular_file(path: str, what: str = "input") -> None:
    """ValueError naming ``path`` when it is a local path that is not a regular file (a named pipe, a socket, a
    device: opening one blocks or never ends); remote paths are files by construction."""
    if "://" in path:
        return
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return  # the caller says it matches nothing
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    raise ValueError(f"{what} {path!r} is {kind}, not a regular file; name regular files only")


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
    """Write to a temporary name beside ``path`` and rename it into place only when the block succeeds.

    A full disk or quota (``ENOSPC``, ``EDQUOT``) raises :class:`~wit_builder.core.errors.DiskFull` naming
    ``path`` (one line, exit 1) after the temporary is removed; other errors propagate as they are.
    """
    from apache_beam.io.filesystem import CompressionTypes

    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        f = FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED)
        try:
            yield f
            f.close()
        except BaseException:
            with contextlib.suppress(OSError):
                f.close()
            raise
    except BaseException as exc:
        with contextlib.suppress(Exception):  # the temporary may not exist (create failed): nothing to remove
            FileSystems.delete([tmp])
        full = _disk_full(path, exc)
        if full is not None:
            raise full from exc
        raise
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def _disk_full(path: str, exc: BaseException) -> errors.DiskFull | None:
    """:class:`~wit_builder.core.errors.DiskFull` when ``exc`` (or an error Beam wrapped it in) is a full disk."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and (full := errors.disk_full(path, seen)) is not None:
            return full
        seen = seen.__cause__ or seen.__context__
    return None


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


# ---- the output folder's bookkeeping (rules: wit_builder.core.run_folder) ----

def folder_names(folder: str) -> list[str]:
    """The names of the entries directly in ``folder`` (files and subfolders; ``[]`` when it does not exist).
    On an object store, the first path segment of every object under ``folder/``."""
    if "://" not in folder:
        return sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    prefix = join(folder, "")
    return sorted({path[len(prefix):].split("/", 1)[0] for path in match(join(folder, "**"), limit=10_000)
                   if path.startswith(prefix) and path != prefix})


def read_marker(folder: str) -> str | None:
    """The command the run marker of ``folder`` names (``run_folder.marker_command``); None without one."""
    path = join(folder, run_folder.MARKER)
    if not exists(path):
        return None
    with open_read(path) as f:
        return run_folder.marker_command(f.read(1 << 16))


def write_marker(folder: str, command: str) -> None:
    """Write the run marker of ``command`` into ``folder`` (the same bytes on every run)."""
    write_json(join(folder, run_folder.MARKER), run_folder.marker_document(command))


def remove_temporaries(folder: str) -> list[str]:
    """Delete our temporaries (``run_folder.is_temporary``) in ``folder`` and its subfolders, the files a killed
    writer left; the paths removed. Call it only while holding the folder's lock."""
    if "://" in folder:
        found = [p for depth in range(3) for p in match(join(folder, *["*"] * depth, "*.tmp-*"))]
    else:
        found = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]
    stale = sorted(p for p in found if run_folder.is_temporary(p))
    delete(stale)
    return stale
