"""Final WebDataset shards: names, keys, sample records and reproducible tar bytes.

Samples are numbered 0..N-1 in a global order; sample ``i`` lands in shard ``i // samples_per_shard``, so
every shard but the last holds exactly ``samples_per_shard`` samples. Keys are the zero-padded global index
(no dots: WebDataset splits a member name at the first dot). Tars hold ``KEY.<image ext>``, ``KEY.json``,
``KEY.txt`` with members sorted by name, a fixed mtime, uid/gid 0 and no user names, so the same samples
always give the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, BinaryIO

from schemas.sample import SAMPLE_JSON_FIELDS
from wit_builder.core import tar_writer

DEFAULT_SAMPLES_PER_SHARD = 10_000
KEY_DIGITS = 10          # room for 10 billion samples
SHARD_DIGITS = 5         # docs/stages/finalize.md's {shard:05d}; widens by itself past 99,999 shards
FIXED_MTIME = 946_684_800  # 2000-01-01T00:00:00Z: a fixed, plausible timestamp (some tools warn on 0)


def sample_key(index: int) -> str:
    """The key of global sample ``index``: KEY_DIGITS zero-padded digits, no dots (WebDataset splits there)."""
    return f"{index:0{KEY_DIGITS}d}"


def shard_name(shard: int) -> str:
    """The name of final shard ``shard``: 5 zero-padded digits (docs/stages/finalize.md's ``{shard:05d}``)."""
    return f"{shard:0{SHARD_DIGITS}d}"


def shard_of(index: int, samples_per_shard: int) -> int:
    """The final shard of global sample ``index``: equal-count shards, ``index // samples_per_shard``."""
    return index // samples_per_shard


def shard_sizes(total: int, samples_per_shard: int) -> dict[str, int]:
    """shard name -> sample count for ``total`` samples: equal counts, the last shard possibly short."""
    if samples_per_shard < 1:
        raise ValueError(f"samples per shard must be >= 1, got {samples_per_shard}")
    full, rest = divmod(total, samples_per_shard)
    sizes = {shard_name(i): samples_per_shard for i in range(full)}
    if rest:
        sizes[shard_name(full)] = rest
    return sizes


def sample_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The ``.json`` record of a sample: exactly SAMPLE_JSON_FIELDS, taken from its final row."""
    return {name: row.get(name) for name in SAMPLE_JSON_FIELDS}


def sample_members(row: Mapping[str, Any], image_ext: str, image: bytes) -> list[tuple[str, bytes]]:
    """The tar members of one sample, sorted by name."""
    key = row["key"]
    record = json.dumps(sample_json(row), sort_keys=True, ensure_ascii=False).encode()
    return sorted([
        (f"{key}.{image_ext}", image),
        (f"{key}.json", record),
        (f"{key}.txt", (row.get("caption") or "").encode()),
    ])


def write_tar(fileobj: BinaryIO, members: Iterable[tuple[str, bytes]]) -> int:
    """Write ``members`` (name, bytes) as a reproducible ustar stream; returns the member count."""
    return tar_writer.write_members(fileobj, members, FIXED_MTIME)
