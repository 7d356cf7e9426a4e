"""Small stage-4 examples for the unit tests: realistic RawRecords without raw shards on disk, and a stats
document (``wit_builder.finalize.stats.summarize``'s, with the settings) with its query counts."""

from __future__ import annotations

from typing import Any

from schemas.finalize import FINAL_STATUSES, ImageLocation, RawRecord

PHASH = "c3a1f0e8d4b29657"


def record(uid: str, *, shard: str = "00000", row: int = 0, raw_rows: int = 1, status: str = "success",
           queries: tuple[str, ...] = ("space shuttle",), size: tuple[int, int] = (640, 480), phash: str | None = PHASH,
           sha256: str | None = None, image: ImageLocation | None = None) -> RawRecord:
    """A raw row as finalize reads it: a success (with an image location) unless ``status`` says otherwise."""
    return RawRecord(
        key=None, uid=uid, url=f"https://upload.example.org/{uid}.jpg", caption=f"photo {uid}", queries=queries,
        status=status, error_message=None if status == "success" else "HTTP 404", http_status=200, width=256,
        height=192, original_width=size[0], original_height=size[1],
        sha256=sha256 or f"{int(uid, 16):064x}", phash=phash, bytes=40_000, shard=None, duplicate_of=None,
        raw_shard=shard, raw_key=f"{row:09d}", row=row, raw_rows=raw_rows, raw_status=status, reason=status,
        image=image or (ImageLocation(f"/raw/{shard}.tar", 512 * (row + 1), 40_000, "jpg")
                        if status == "success" else None))


def flip(phash: str, bits: int) -> str:
    """``phash`` with its lowest ``bits`` bits flipped (a Hamming distance of ``bits``)."""
    return f"{int(phash, 16) ^ ((1 << bits) - 1):016x}"


STATS: dict[str, Any] = {
    "settings": {"raw": "raw/", "samples_per_shard": 2, "per_query_cap": 3, "phash_distance": 4, "seed": 7,
                 "decontaminate": "eval", "eval_images": 2, "match_rule": "normalized"},
    "input": {"raw_shards": 1, "rows": 4, "uids": 4, "files": ["00000"]},
    "hash_sources": {"raw": 3},
    "statuses": {s: {"success": 2, "duplicate": 1, "blocked": 1}.get(s, 0) for s in FINAL_STATUSES},
    "reasons": {"success": 2, "exact_duplicate": 1, "blocked": 1},
    "dedup": {"candidates": 3, "repeated_uids": 0, "exact_duplicates": 1, "near_duplicates": 0, "decontaminated": 0,
              "eval_images_hashed": 2, "eval_images_unreadable": 0},
    "output": {"samples": 2, "shards": 1, "samples_per_shard": 2},
    "image_sizes": {"width": {"256-511": 2}, "height": {"128-255": 2}},
}
QUERIES = [("moon", 2, 1), ("sun | star", 1, 1)]
