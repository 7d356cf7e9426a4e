"""One raw download shard in img2dataset's layout, byte-for-byte deterministic.

``{shard}.tar`` holds ``KEY.<jpg|webp>``, ``KEY.json`` and ``KEY.txt`` for each success, in key order, with
fixed mtimes, owners and modes; ``{shard}.parquet`` holds every input row (schemas.download.RAW_ROWS);
``{shard}_stats.json`` counts the statuses. The same rows give the same bytes, so a killed and resumed run
ends identical to an uninterrupted one. Timings are logged, never stored.

The caller writes each file temp-then-rename, the stats last: a shard is complete when its stats exist.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

import pyarrow as pa

from schemas.download import RAW_ROWS, RAW_STATUSES
from wit_builder import tar_writer

SHARD_DIGITS = 5  # img2dataset's oom_shard_count
TOP_ERRORS = 20
_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


@dataclass(frozen=True)
class RawSample:
    row: dict[str, Any]              # RAW_ROWS fields
    image: bytes | None = None       # the encoded image of a success
    image_ext: str | None = None     # "jpg" | "webp"


def shard_name(shard_id: int) -> str:
    return f"{shard_id:0{SHARD_DIGITS}d}"


def shard_files(shard_id: int) -> tuple[str, str, str]:
    """(tar, parquet, stats) file names of a shard; the stats file is written last."""
    name = shard_name(shard_id)
    return f"{name}.tar", f"{name}.parquet", f"{name}_stats.json"


def sample_key(shard_id: int, index: int, rows_per_shard: int) -> str:
    """img2dataset's key: shard id and row index, zero-padded digits only (no dots)."""
    digits = max(1, math.ceil(math.log10(rows_per_shard)))
    return f"{shard_id * 10**digits + index:0{digits + SHARD_DIGITS}d}"


def write_tar(fileobj: BinaryIO, samples: Iterable[RawSample]) -> int:
    """Stream the successes into a tar (works on non-seekable streams); returns how many were written."""
    successes = sorted((s for s in samples if s.image is not None), key=lambda s: s.row["key"])
    members = ((name, data) for s in successes for name, data in (
        (f"{s.row['key']}.{s.image_ext}", s.image),
        (f"{s.row['key']}.json", sample_json(s.row)),
        (f"{s.row['key']}.txt", (s.row.get("caption") or "").encode()),
    ))
    tar_writer.write_members(fileobj, members, mtime=0)
    return len(successes)


def sample_json(row: dict[str, Any]) -> bytes:
    return json.dumps({f.name: row.get(f.name) for f in RAW_ROWS}, sort_keys=True, ensure_ascii=False).encode()


def rows_table(samples: Iterable[RawSample]) -> pa.Table:
    rows = sorted((s.row for s in samples), key=lambda r: r["key"])
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in RAW_ROWS} for r in rows], schema=RAW_ROWS)


def error_kind(message: str) -> str:
    """An error message with URLs removed, so that the same failure on many URLs counts as one kind."""
    return _URL.sub("<url>", message)[:200]


def shard_stats(shard_id: int, samples: Iterable[RawSample], engine: str) -> dict[str, Any]:
    rows = [s.row for s in samples]
    statuses = Counter(r["status"] for r in rows)
    errors = Counter(error_kind(r["error_message"]) for r in rows if r.get("error_message"))
    return {
        "shard": shard_name(shard_id),
        "engine": engine,
        "count": len(rows),
        "statuses": {status: statuses.get(status, 0) for status in RAW_STATUSES},
        "successes": statuses.get("success", 0),
        "bytes_downloaded": sum(r.get("bytes") or 0 for r in rows),
        "top_errors": dict(sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_ERRORS]),
    }
