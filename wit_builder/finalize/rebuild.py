"""``wit finalize --uids LIST``: rebuild a dataset from a published uid list instead of selecting one.

MetaCLIP (#10, #19, #63: "release the exact curated pairs") and DataComp's resharder publish uids, not images:
a second team downloads the same pairs and rebuilds the same shards. With ``--uids`` the list *is* the
selection: no dedup, decontamination or re-cap runs; a uid is kept when the raw shards hold a success for it
(the first such row, as for a repeated uid: ``rules.pick_one_per_uid``). Everything else is the usual stage 4:
the kept samples are numbered in (raw shard, raw row) order and written into equal-count shards, and every raw
row ends with a final status in the accounting:

- a listed uid with a success: ``success``; its other raw rows ``duplicate`` (``repeated_uid``);
- a raw success whose uid is not listed: ``filtered``, reason ``not_listed``; other raw rows keep their status;
- a listed uid without a success in the raw shards (not there, or failed/blocked/filtered there): written to
  ``OUT/missing_uids.txt`` (``uid<TAB>why``, sorted) and counted (``uids_missing``); the rest is written.

So when the raw shards are the same (the same pairs downloaded with the same settings: the same plan.json) and
hold the same bytes, the rebuilt shards are byte-identical to the original ones (``tests/finalize/
test_rebuild.py``); other raw shards give the same samples, numbered in their own order.

The list: a text file (one uid per line, anything after a tab ignored; blank lines and lines starting with ``#``
skipped) or a parquet file with a string ``uid`` column (e.g. the original's shard parquets or
``accounting/rows``), read by Beam's text or parquet source in the pipeline (split over workers, never held at
the launcher); :func:`check_uid_list` checks it before any work.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.finalize import RawRecord
from wit_builder.beam import fileio
from wit_builder.core.errors import InputError
from wit_builder.finalize import rules

MISSING_UIDS = "missing_uids.txt"
NOT_LISTED = "not_listed"
SNIFF_BYTES = 1 << 16


class UidListError(InputError):
    """A ``--uids`` file that cannot be read as a uid list; the message names the file and what is wrong."""


def is_parquet(path: str) -> bool:
    """Whether the list is a parquet file (by its name: ``.parquet``/``.pq``), else a text file."""
    return path.lower().endswith((".parquet", ".pq"))


def check_uid_list(path: str) -> None:
    """Before any work: the list exists and is a file; a parquet has a string ``uid`` column and rows (its footer);
    a text file starts as UTF-8 text and holds a uid. UidListError naming the file otherwise."""
    if "://" not in path and os.path.isdir(path):
        raise UidListError(f"--uids {path}: a folder, not a file: name a .txt or .parquet uid list")
    if not fileio.exists(path):
        raise UidListError(f"--uids {path}: no such file")
    if is_parquet(path):
        try:
            with fileio.open_read(path) as f:
                parquet = pq.ParquetFile(f)
                schema, rows = parquet.schema_arrow, parquet.metadata.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise UidListError(f"--uids {path}: not a parquet file ({exc})") from exc
        if "uid" not in schema.names or not pa.types.is_string(schema.field("uid").type) and not \
                pa.types.is_large_string(schema.field("uid").type):
            found = ", ".join(f"{field.name}: {field.type}" for field in schema)
            raise UidListError(f"--uids {path}: needs a string 'uid' column (found {found})")
        if rows == 0:
            raise UidListError(f"--uids {path}: holds no uid (a parquet file without rows)")
        return
    with fileio.open_read(path) as f:
        head = f.read(SNIFF_BYTES)
    try:
        text = head.decode("utf-8") if len(head) < SNIFF_BYTES else head.decode("utf-8", errors="ignore")
    except UnicodeDecodeError as exc:
        raise UidListError(f"--uids {path}: not UTF-8 text ({exc}); a text list holds one uid per line") from exc
    if "\x00" in text:
        raise UidListError(f"--uids {path}: binary data, not a text list of uids (a parquet list must end in "
                           ".parquet)")
    if len(head) < SNIFF_BYTES and not list(uids_in_lines(text.splitlines())):
        raise UidListError(f"--uids {path}: holds no uid")


def uids_in_lines(lines: Iterable[str]) -> Iterable[str]:
    """The uids of a text list's lines: stripped, blank lines and ``#`` comments skipped. A line's uid is what
    precedes its first tab (so ``missing_uids.txt``, ``uid<TAB>why``, is itself a list), and a UTF-8 byte-order
    mark (an editor's export) is no part of it."""
    for line in lines:
        uid = line.replace("\ufeff", "").split("\t", 1)[0].strip()
        if uid and not uid.startswith("#"):
            yield uid


def select_listed(uid: str, listed: bool, records: Iterable[RawRecord], list_name: str,
                  ) -> tuple[RawRecord | None, list[RawRecord], str | None]:
    """One uid's raw rows under the list: (the kept success or None, the rows decided here, why the uid is
    missing or None). See the module docstring for the rules."""
    rows = list(records)
    if not listed:
        decided = [rules.decide(r, "filtered", NOT_LISTED, f"uid not in the --uids list {list_name}")
                   if r.status == "success" else r for r in rows]
        return None, decided, None
    if not rows:
        return None, [], "not in the raw shards"
    first, duplicates = rules.pick_one_per_uid(rows)
    if first.status != "success":
        return None, [first, *duplicates], f"no success in the raw shards (status {first.status})"
    return first, duplicates, None


def missing_text(missing: Iterable[tuple[str, str]]) -> bytes:
    """``missing_uids.txt``: ``uid<TAB>why`` per line, sorted by uid."""
    return "".join(f"{uid}\t{why}\n" for uid, why in sorted(missing)).encode()
