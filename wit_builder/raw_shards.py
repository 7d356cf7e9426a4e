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


# (status, words in the error kind) -> what to try; the first rule that matches a top error gives its hint.
_HINTS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("blocked", ("loopback", "private"), "the URLs resolve to loopback or private addresses, refused by default: "
     "pass --allow-private-networks if that is intended (a test server, an intranet mirror)"),
    ("blocked", ("link-local", "metadata"), "the URLs resolve to link-local or metadata addresses, refused by "
     "default: only a test of your own may need --allow-link-local"),
    ("blocked", ("robots.txt",), "robots.txt disallows our user agent on these hosts; --no-robots ignores it, "
     "only with the site owner's permission"),
    ("blocked", ("x-robots-tag",), "the servers opt out with X-Robots-Tag; --no-x-robots-tag ignores that, only "
     "with the site owner's permission"),
    ("blocked", ("scheme",), "the URLs are not http(s)"),
    ("failed_to_download", ("dns", "timeout", "connection", "deadline"), "the hosts are not reachable from this "
     "machine (DNS, proxy, firewall?), or too slow for --timeout/--deadline"),
    ("failed_to_download", ("http 4", "http 5"), "the servers answer with HTTP errors: check the URLs in a browser"),
    ("failed_to_decode", (), "the URLs do not serve images (HTML pages, soft 404s?), or the images are over the "
     "size limits (--max-image-pixels, --max-output-pixels, --image-memory-budget)"),
    ("filtered", (), "every image was filtered: relax --min-image-size or --max-aspect-ratio"),
)


def merge_top_errors(tables: Iterable[dict[str, int]], limit: int = TOP_ERRORS) -> dict[str, int]:
    """Sum several shards' ``top_errors`` and keep the ``limit`` most frequent (ties by text)."""
    total: Counter[str] = Counter()
    for table in tables:
        total.update(table)
    return dict(sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:limit])


def failure_hints(statuses: dict[str, int], top_errors: dict[str, int]) -> list[str]:
    """What to try when no row succeeded: one hint per matching rule, most frequent status first."""
    hints: list[str] = []
    errors = [kind.lower() for kind in top_errors]
    for status, _ in sorted(statuses.items(), key=lambda kv: -kv[1]):
        if not statuses.get(status) or status == "success":
            continue
        for rule_status, words, hint in _HINTS:
            if rule_status == status and hint not in hints and (
                    not words or any(word in kind for kind in errors for word in words)):
                hints.append(hint)
    return hints or ["see top_errors in the shards' *_stats.json"]
