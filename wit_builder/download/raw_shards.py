"""Stage 3's raw shards: written byte-for-byte deterministic by our engine, read back (either engine) by stage 4.

Writing. ``{shard}.tar`` holds ``KEY.<jpg|webp>``, ``KEY.json`` and ``KEY.txt`` for each success, in key order, with
fixed mtimes, owners and modes; ``{shard}.parquet`` holds every input row (schemas.download.RAW_ROWS);
``{shard}_stats.json`` counts the statuses. The same rows give the same bytes, so a killed and resumed run
ends identical to an uninterrupted one. Timings are logged, never stored.

The caller writes each file temp-then-rename, the stats last: a shard is complete when its stats exist.

Reading. A raw shard is ``{shard}.parquet`` (every input row with its status) beside ``{shard}.tar`` (the images of
the successes). Our download engine writes ``schemas.download.RAW_ROWS``; img2dataset writes its own
columns, with ``uid`` and ``queries`` as additional columns (``--save_additional_columns
'["uid","queries"]'``), ``failed_to_resize`` for decode failures and no pHash. Missing hashes are computed
here from the bytes stored in the tar: the pHash is then of the stored (resized) image, which pHash is
built to tolerate, and the sha256 of the stored bytes rather than of the original download, so exact dedup
still finds identical downloads (same bytes, same resize) but not the same image resized differently.

Every row becomes a ``schemas.finalize.RawRecord``: the FINAL_ROWS fields plus finalize's declared bookkeeping,
among them an ``ImageLocation`` (tar, offset, size) so the shard writer later reads exactly those bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import posixpath
import re
import tarfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

import pyarrow as pa

from schemas.download import RAW_ROWS, RAW_STATUS_ALIASES, RAW_STATUSES
from schemas.finalize import ImageLocation, RawRecord
from wit_builder.core import tar_writer
from wit_builder.core.dedup import image_phash
from wit_builder.core.errors import InputError, stable_text

SHARD_DIGITS = 5  # img2dataset's oom_shard_count
# Why a row is ``blocked`` (the native engine's ``fetch.Fetcher``), each counted on its own: robots.txt disallows
# it, or its robots.txt could not be had (RFC 9309: the origin is then disallowed); an X-Robots-Tag rule; a TDMRep
# reservation (header or tdmrep.json), or tdmrep.json still being fetched at the deadline; a refused address or
# scheme. "other": a blocked row whose engine gives no reason (img2dataset).
BLOCK_REASONS: tuple[str, ...] = ("robots_txt", "robots_txt_unreachable", "x_robots_tag", "tdm_reserved",
                                  "tdm_unknown", "address", "scheme", "other")
TOP_ERRORS = 20
_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


@dataclass(frozen=True)
class RawSample:
    """One downloaded row as stage 3 writes it: its RAW_ROWS fields and, for a success, the stored image."""

    row: dict[str, Any]              # RAW_ROWS fields
    image: bytes | None = None       # the encoded image of a success
    image_ext: str | None = None     # "jpg" | "webp"
    reason: str | None = None        # blocked: why (fetch.BLOCK_REASONS), counted in the shard's stats only


def shard_name(shard_id: int) -> str:
    """The zero-padded name of a url shard (img2dataset's 5 digits: ``00042``)."""
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
    successes = sorted(((s, s.image) for s in samples if s.image is not None), key=lambda si: si[0].row["key"])
    members = ((name, data) for s, image in successes for name, data in (
        (f"{s.row['key']}.{s.image_ext}", image),
        (f"{s.row['key']}.json", sample_json(s.row)),
        (f"{s.row['key']}.txt", (s.row.get("caption") or "").encode()),
    ))
    tar_writer.write_members(fileobj, members, mtime=0)
    return len(successes)


def sample_json(row: dict[str, Any]) -> bytes:
    """The ``KEY.json`` member of a raw sample: its RAW_ROWS fields as sorted UTF-8 JSON."""
    return json.dumps({f.name: row.get(f.name) for f in RAW_ROWS}, sort_keys=True, ensure_ascii=False).encode()


def rows_table(samples: Iterable[RawSample]) -> pa.Table:
    """The raw shard's parquet table: every row (RAW_ROWS), sorted by key."""
    rows = sorted((s.row for s in samples), key=lambda r: r["key"])
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in RAW_ROWS} for r in rows], schema=RAW_ROWS)


def error_kind(message: str) -> str:
    """An error message with URLs removed, so that the same failure on many URLs counts as one kind."""
    return _URL.sub("<url>", message)[:200]


def shard_stats(shard_id: int, samples: Iterable[RawSample], engine: str) -> dict[str, Any]:
    """``{shard}_stats.json``: rows, rows per RAW_STATUSES status, successes, bytes downloaded, the blocked rows per
    reason (``blocked_reasons``, sorted; a blocked row without one counts as ``other``) and the TOP_ERRORS most
    frequent error kinds (URLs removed, see :func:`error_kind`)."""
    samples = list(samples)
    rows = [s.row for s in samples]
    blocked = Counter(s.reason or "other" for s in samples if s.row.get("status") == "blocked")
    statuses = Counter(r["status"] for r in rows)
    errors = Counter(error_kind(r["error_message"]) for r in rows if r.get("error_message"))
    return {
        "shard": shard_name(shard_id),
        "engine": engine,
        "count": len(rows),
        "statuses": {status: statuses.get(status, 0) for status in RAW_STATUSES},
        "successes": statuses.get("success", 0),
        "bytes_downloaded": sum(r.get("bytes") or 0 for r in rows),
        "blocked_reasons": dict(sorted(blocked.items())),
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
    ("blocked", ("tdm-reservation", "tdmrep.json"), "the servers reserve text-and-data-mining rights (TDMRep); "
     "--no-tdmrep ignores that, only with the rightsholder's permission"),
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


# Reading raw shards (stage 4): either engine's layout into uniform row dicts.

IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "webp", "png")
REQUIRED_COLUMNS: tuple[str, ...] = ("key", "uid", "url", "status")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PHASH = re.compile(r"^[0-9a-f]{16}$")


class RawInputError(InputError):
    """A raw shard that cannot be read as stage-3 output; the message names the file and the row."""


def raw_shard_names(parquet_paths: Iterable[str]) -> dict[str, str]:
    """A short unique name per raw parquet: its path below the inputs' common folder, without ``.parquet``,
    with ``/`` as ``-`` (``run1/00003.parquet`` -> ``run1-00003``)."""
    paths = sorted(parquet_paths)
    parts = [(p[: -len(".parquet")] if p.endswith(".parquet") else p).split("/") for p in paths]
    # Split on "/" by hand: posixpath would fold the "//" of gs:// and s3:// URLs.
    common = len(parts[0]) - 1
    for i in range(common):
        if any(len(other) <= i + 1 or other[i] != parts[0][i] for other in parts):
            common = i
            break
    return {p: "-".join(part[common:]) for p, part in zip(paths, parts, strict=True)}


def check_columns(names: list[str], source: str) -> None:
    """Raise RawInputError naming ``source`` when a required column is missing."""
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        hint = (" (img2dataset output: rerun it with --save_additional_columns '[\"uid\",\"queries\"]')"
                if "uid" in missing and "status" in names else "")
        raise RawInputError(f"{source}: not a raw download shard: missing column(s) {', '.join(missing)}{hint}")


def table_rows(columns: dict[str, list[Any]], source: str, raw_shard: str) -> list[RawRecord]:
    """Rows of one raw parquet (given as ``pyarrow.Table.to_pydict()``: column -> values) as records, in order.

    Raw statuses are mapped (``RAW_STATUS_ALIASES``: img2dataset's ``failed_to_resize``), queries given as JSON
    text (img2dataset keeps additional columns as text) are parsed, deduplicated and sorted, malformed hashes
    (not 64/16 lowercase hex digits) become None so that finalize computes them from the stored bytes.
    Each record's ``reason`` starts as its raw status. Raises RawInputError naming ``source`` (and the row)
    for a missing column, an unknown status or an empty uid.
    """
    check_columns(list(columns), source)
    n = len(columns["uid"])
    rows = []
    for i in range(n):
        def get(name: str, i: int = i) -> Any:
            return columns[name][i] if name in columns else None

        status = RAW_STATUS_ALIASES.get(get("status"), get("status"))
        if status not in RAW_STATUSES:
            raise RawInputError(f"{source}: row {i}: unknown status {get('status')!r} (expected one of "
                                f"{', '.join(RAW_STATUSES + tuple(RAW_STATUS_ALIASES))})")
        if not get("uid"):
            raise RawInputError(f"{source}: row {i}: empty uid")
        queries = get("queries")
        if isinstance(queries, str):  # a list that went through CSV/JSON on the way (img2dataset keeps it as text)
            try:
                queries = json.loads(queries)
            except ValueError:
                queries = [queries]
        sha256, phash = get("sha256"), get("phash")
        def as_int(name: str) -> int | None:
            value = get(name)
            return None if value is None else int(value)

        rows.append(RawRecord(
            key=None,
            uid=str(get("uid")),
            url=get("url") or "",
            caption=get("caption"),
            queries=tuple(sorted(set(queries))) if queries else (),
            status=status,
            error_message=get("error_message"),
            sha256=sha256 if isinstance(sha256, str) and _SHA256.match(sha256) else None,
            phash=phash if isinstance(phash, str) and _PHASH.match(phash) else None,
            shard=None,
            duplicate_of=None,
            raw_shard=raw_shard,
            raw_key=None if get("key") is None else str(get("key")),
            row=i,
            raw_rows=n,
            raw_status=status,  # as downloaded (aliases mapped), before finalize's own checks
            reason=status,
            http_status=as_int("http_status"),
            width=as_int("width"),
            height=as_int("height"),
            original_width=as_int("original_width"),
            original_height=as_int("original_height"),
            bytes=as_int("bytes"),
            lang=None if get("lang") is None else str(get("lang")),
            lang_score=None if get("lang_score") is None else float(get("lang_score")),
        ))
    return rows


def index_tar(fileobj: BinaryIO) -> tuple[dict[str, dict[str, tuple[int, int]]], str | None]:
    """key -> {extension: (data offset, size)} of a raw tar, reading headers only on a seekable file.

    A truncated or corrupt tar keeps the members read before the damage; the second value then says what
    went wrong (None when the tar is whole).
    """
    members: dict[str, dict[str, tuple[int, int]]] = {}
    error = None
    try:
        with tarfile.open(fileobj=fileobj, mode="r:") as tar:
            for info in tar:
                if info.isfile():
                    base = posixpath.basename(info.name)
                    key, _, ext = base.partition(".")
                    members.setdefault(key, {})[ext.lower()] = (info.offset_data, info.size)
    except (tarfile.TarError, EOFError, OSError) as exc:
        error = stable_text(f"{type(exc).__name__}: {exc}")
    return members, error


def _unreadable(record: RawRecord, message: str) -> RawRecord:
    return record.replace(status="failed_to_decode", error_message=message, reason="raw_image_unreadable")


def attach_images(
    records: Iterable[RawRecord],
    tar_path: str,
    members: dict[str, dict[str, tuple[int, int]]],
    tar_size: int,
    tar_error: str | None,
    read_member: Callable[[int, int], bytes],
) -> list[RawRecord]:
    """The records with each success's image located in the raw tar, checked to decode, and missing
    sha256/pHash/size filled from the stored bytes; the other rows unchanged, in the same order.

    ``members`` and ``tar_error`` come from :func:`index_tar`, ``tar_size`` is the tar's length in bytes and
    ``read_member(offset, size)`` returns those bytes of it. A success whose image is missing, truncated or
    undecodable becomes ``failed_to_decode`` (reason ``raw_image_unreadable``) with a message naming the tar and
    the key, so nothing is lost and nothing unreadable reaches a final shard, even when the raw row carries
    hashes and sizes.
    """
    return [_attach_image(r, tar_path, members, tar_size, tar_error, read_member) if r.status == "success" else r
            for r in records]


def _attach_image(record: RawRecord, tar_path: str, members: dict[str, dict[str, tuple[int, int]]], tar_size: int,
                  tar_error: str | None, read_member: Callable[[int, int], bytes]) -> RawRecord:
    key = record.raw_key
    found = members.get(key or "", {})
    ext = next((e for e in IMAGE_EXTENSIONS if e in found), None)
    if ext is None:
        detail = f" (tar unreadable after some members: {tar_error})" if tar_error else ""
        return _unreadable(record, f"image for key {key!r} missing from {tar_path}{detail}")
    offset, size = found[ext]
    if offset + size > tar_size:
        return _unreadable(record, f"image {key}.{ext} truncated in {tar_path}")
    data = read_member(offset, size)
    if len(data) != size:
        return _unreadable(record, f"image {key}.{ext} truncated in {tar_path}")
    # Decode every stored image, even when the row's metadata looks complete: bytes that do not decode
    # must not reach a final shard whatever the raw row says.
    failure, header_size = decode_check(data)
    if failure is not None:
        return _unreadable(record, f"image {key}.{ext} in {tar_path} does not decode: {failure}")
    changes: dict[str, Any] = {"image": ImageLocation(tar_path, offset, size, ext)}
    if not record.sha256:
        changes.update(sha256=hashlib.sha256(data).hexdigest(), hash_source="stored_bytes")
    if not (record.width and record.height):
        changes["width"], changes["height"] = header_size
    if not record.phash:
        try:
            changes["phash"] = image_phash(data)
        except Exception as exc:  # noqa: BLE001 - any decoder error means the stored image is unusable
            # The hashes and size found so far stay on the failed row (its accounting shows them).
            return _unreadable(record.replace(**{**changes, "image": None}),
                               stable_text(f"image {key}.{ext} in {tar_path} does not decode: "
                                           f"{type(exc).__name__}: {exc}"))
    return record.replace(**changes)


def decode_check(data: bytes) -> tuple[str | None, tuple[int, int]]:
    """(None, (width, height)) when ``data`` decodes to its last byte, else (why, (0, 0)).

    Cheap: a JPEG is decoded at 1/8 scale (libjpeg still reads every entropy-coded block, so a truncated
    or cut file fails as at full scale); the stored images are small (the download stage resized them).
    Pillow's decompression-bomb limit applies (a stored image is never that large).
    """
    from PIL import Image

    from wit_builder.download.images import WEB_FORMATS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=WEB_FORMATS) as img:
                size = img.size
                if img.format == "JPEG":
                    img.draft(img.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
                img.load()
        return None, size
    except Exception as exc:  # noqa: BLE001 - Pillow reports bad data through many exception types
        return stable_text(f"{type(exc).__name__}: {exc}"), (0, 0)
