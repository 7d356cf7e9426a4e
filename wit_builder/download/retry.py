"""``wit download --retry-failed``: refetch only the rows of finished shards that failed for a transient reason.

A finished shard is normally read back as it is (``worker``), so a row that failed on a timeout, a reset
connection, a DNS error, a 429 or a 5xx stays failed for ever; img2dataset's and datatrove's answer is "filter
the parquet yourself" (img2dataset #452, #242, #358; datatrove #220, #152). With ``--retry-failed`` the worker
instead

1. reads the finished shard's parquet (``read_rows``) and picks the rows whose failure is transient
   (``failure_reason`` in ``reasons``, by default all of ``TRANSIENT_REASONS``); permanent failures (404 and
   other 4xx, blocked by address, robots.txt or an opt-out, undecodable, filtered, malformed URLs, redirect
   loops, over-size bodies) are never retried,
2. when there are some, reads the shard's stored images back (``read_samples``: the successes' bytes from its
   tar) and fetches just those rows again through the same fetcher (same per-host limits, robots.txt,
   X-Robots-Tag),
3. writes the shard again from the old samples with the retried rows replaced (``merge``): the same writer, so
   every sample that had succeeded keeps its bytes (tar members and parquet row), and the shard is the one a
   first run would have written had those rows succeeded then.

The three files are rewritten temp-then-rename in the usual order (tar, parquet, stats last). A run killed
half way leaves either the old shard or a tar with extra members beside the old parquet (finalize reads the
parquet's statuses; a second ``--retry-failed`` retries the same rows again), so a rerun converges.

The reasons are read from what stage 3 stored (``error_message``, ``http_status``): our fetcher's messages and
img2dataset's (exception text), see :func:`failure_reason`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from wit_builder.beam import fileio
from wit_builder.download import raw_shards
from wit_builder.download.options import TRANSIENT_REASONS
from wit_builder.download.raw_shards import RawSample

RETRY_STATUSES = frozenset({408, 425, 429})  # the other 4xx are permanent

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    # DNS first: "DNS failure for ...: ... NameResolutionError" also says "connection" in urllib3's wording
    ("dns", re.compile(r"\bDNS\b|NameResolution|Name or service not known|getaddrinfo|nodename nor servname",
                       re.IGNORECASE)),
    ("timeout", re.compile(r"timeout|timed out|deadline of .* exceeded", re.IGNORECASE)),
    ("connection", re.compile(r"connection failed|connection (?:reset|refused|aborted)|RemoteDisconnected|"
                              r"ProtocolError|IncompleteRead|ChunkedEncodingError|Connection broken",
                              re.IGNORECASE)),
)


def failure_reason(row: Mapping[str, Any]) -> str | None:
    """The transient reason (one of TRANSIENT_REASONS) a raw row failed for, or None for a success or a
    permanent failure.

    Only ``failed_to_download`` rows can be transient (``blocked``, ``failed_to_decode`` and ``filtered`` are
    decisions about the URL or the bytes). HTTP 408/425/429 -> ``http_429`` (the throttling family), 5xx ->
    ``http_5xx``, any other HTTP status -> permanent; without a status the message decides (DNS, timeout or the
    deadline, a refused/reset/broken connection).
    """
    if row.get("status") != "failed_to_download":
        return None
    http_status = row.get("http_status")
    message = str(row.get("error_message") or "")
    if http_status is None:  # img2dataset keeps the code only in its message
        found = re.search(r"\bHTTP (?:Error )?(\d{3})\b", message)
        http_status = int(found.group(1)) if found else None
    if http_status is not None:
        if http_status in RETRY_STATUSES:
            return "http_429"
        if 500 <= http_status <= 599:
            return "http_5xx"
        if http_status >= 400:
            return None
    for reason, pattern in _PATTERNS:
        if pattern.search(message):
            return reason
    return None


def rows_to_retry(rows: Sequence[Mapping[str, Any]], reasons: Iterable[str] = TRANSIENT_REASONS) -> list[int]:
    """Indices of the rows whose :func:`failure_reason` is one of ``reasons``, in row order."""
    wanted = set(reasons)
    return [i for i, row in enumerate(rows) if failure_reason(row) in wanted]


def read_rows(parquet_path: str) -> list[dict[str, Any]]:
    """A finished raw shard's parquet rows (RAW_ROWS fields), in key order as stored."""
    rows: list[dict[str, Any]] = fileio.read_parquet(parquet_path).to_pylist()
    return rows


def read_samples(tar_path: str, rows: Sequence[dict[str, Any]]) -> list[RawSample]:
    """A finished raw shard back as the RawSamples that wrote it: its parquet ``rows`` (:func:`read_rows`) with,
    for a success, its stored image bytes and extension from the tar.

    Raises ``raw_shards.RawInputError`` naming the tar and the key when a success's image is not in the tar (a
    damaged shard: ``--overwrite`` redoes the folder).
    """
    images: dict[str, tuple[bytes, str]] = {}
    wanted = {row["key"] for row in rows if row["status"] == "success"}
    if wanted:
        with fileio.open_read(tar_path) as f:
            members, error = raw_shards.index_tar(f)
            for key in sorted(wanted):
                ext = next((e for e in raw_shards.IMAGE_EXTENSIONS if e in members.get(key, {})), None)
                if ext is None:
                    damage = f" ({error})" if error else ""
                    raise raw_shards.RawInputError(
                        f"{tar_path}: no image for success {key}{damage}; the shard is damaged: rerun with "
                        "--overwrite to download the folder again")
                offset, size = members[key][ext]
                f.seek(offset)
                images[key] = (f.read(size), ext)
    return [RawSample(row, *images[row["key"]]) if row["key"] in images else RawSample(row) for row in rows]


def restore_block_reasons(samples: Sequence[RawSample], blocked_reasons: Mapping[str, int]) -> list[RawSample]:
    """The blocked samples given back the reasons their shard's stats counted (``blocked_reasons``).

    A blocked row's reason is counted in ``{shard}_stats.json`` but not stored per row, so it is not in what
    :func:`read_samples` reads back; blocked rows are never retried, so the rewritten shard must count the same
    reasons. They are handed out in key order, reasons sorted: the counts (all the shard stores) are exact. A
    shard written before reasons were counted has none: its blocked rows stay ``other`` as before.
    """
    pool = [reason for reason, n in sorted(blocked_reasons.items()) for _ in range(n)]
    out, given = [], 0
    for sample in samples:
        if sample.row.get("status") == "blocked" and given < len(pool):
            sample = dataclasses.replace(sample, reason=pool[given])
            given += 1
        out.append(sample)
    return out


def merge(old: Sequence[RawSample], retried: Mapping[int, RawSample]) -> list[RawSample]:
    """``old`` with the samples at the indices of ``retried`` replaced; ValueError when a replacement's key is
    not the key of the row it replaces (the shard's layout must not move)."""
    merged = list(old)
    for index, sample in retried.items():
        if sample.row["key"] != old[index].row["key"]:
            raise ValueError(f"retried row {sample.row['key']} does not replace row {old[index].row['key']}")
        merged[index] = sample
    return merged


def recovered(retried: Iterable[RawSample]) -> int:
    """How many retried rows are successes now."""
    return sum(sample.row["status"] == "success" for sample in retried)
