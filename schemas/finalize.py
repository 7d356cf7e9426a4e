"""Stage 4 (finalize) outputs: per-shard parquet rows, per-raw-shard accounting and the final status vocabulary.

Layout under ``--out``::

    {shard}.tar, {shard}.parquet     final WebDataset shards (KEY.jpg|KEY.webp, KEY.txt, KEY.json) and their rows
    sizes.json                       shard name -> sample count, so trainers size epochs without reading tars
    stats.json                       every final status counted; input rows == sum of statuses
    DATASET.md, *.png                the dataset card and its plots
    accounting/rows/{raw}.parquet    every raw input row, in input order, with its final status (FINAL_ROWS)
    accounting/query_counts.parquet  per query: successes before and after dedup/re-balance (QUERY_COUNTS)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from schemas.download import RAW_ROWS

# Every input row (and so every input uid) ends in exactly one of these.
FINAL_STATUSES: tuple[str, ...] = (
    "success", "failed_to_download", "failed_to_decode", "blocked", "filtered", "duplicate", "over_cap",
)

_FINAL_KEY = pa.field("key", pa.string(), nullable=True)  # final sample key (zero-padded global index); successes

# Final rows: the raw row's fields, with ``key`` now the final sample key, plus where the sample came from,
# where it landed and, for duplicates, what it duplicates.
FINAL_ROWS = pa.schema(
    [_FINAL_KEY if f.name == "key" else f for f in RAW_ROWS]
    + [
        pa.field("shard", pa.string(), nullable=True),         # final shard name for successes
        pa.field("duplicate_of", pa.string(), nullable=True),  # uid of the kept sample (duplicates only)
        pa.field("raw_shard", pa.string(), nullable=False),    # raw shard name (parquet path relative to --raw)
        pa.field("raw_key", pa.string(), nullable=True),       # sample key inside the raw shard
    ],
    metadata={"wit.table": "final_rows"},
)

# Per query: successes that entered finalize and samples in the final shards.
QUERY_COUNTS = pa.schema(
    [
        pa.field("query", pa.string(), nullable=False),
        pa.field("input", pa.int64(), nullable=False),
        pa.field("final", pa.int64(), nullable=False),
    ],
    metadata={"wit.table": "final_query_counts"},
)

SIZES_JSON = "sizes.json"
STATS_JSON = "stats.json"
DATASET_CARD = "DATASET.md"
ACCOUNTING_DIR = "accounting"
ROWS_DIR = "accounting/rows"
QUERY_COUNTS_PARQUET = "accounting/query_counts.parquet"
IMAGE_SIZES_PNG = "image_sizes.png"
QUERY_COUNTS_PNG = "query_counts.png"


@dataclass(frozen=True)
class ImageLocation:
    """Where a success's stored image lies inside its raw tar: ``size`` bytes from byte ``offset`` of ``path``.

    ``ext`` is the member's extension (``jpg``, ``jpeg``, ``webp`` or ``png``), written unchanged into the final
    shard. Recorded while finalize reads the raw shard, so the shard writer reads exactly these bytes once.
    """

    path: str
    offset: int
    size: int
    ext: str


@dataclass(frozen=True)
class RawRecord:
    """One raw row on its way through finalize: the FINAL_ROWS fields plus finalize's own bookkeeping.

    The first 19 fields are FINAL_ROWS' columns, in that order (checked at import); ``final_row()`` is the row
    written to the accounting and shard parquets. The rest never leaves finalize:

    - ``row``: the row's index in its raw parquet (0-based); ``raw_rows``: that parquet's row count; together
      they let each raw shard's accounting prove that no row was lost or doubled;
    - ``raw_status``: the status as downloaded (img2dataset's aliases mapped), before finalize's checks;
    - ``reason``: why the row has its status (a raw status, or one of finalize's drop reasons such as
      ``raw_image_unreadable``, ``repeated_uid``, ``near_duplicate``); stats.json counts it under ``reasons``;
    - ``hash_source``: ``raw`` (the download's hashes) or ``stored_bytes`` (computed from the tar's bytes);
    - ``image``: where a success's image lies in the raw tar (None for every other row);
    - ``index``: a survivor's global sample index (0-based, in (raw shard, row) order), set when numbered.

    Frozen: a decision makes a new record (``dataclasses.replace``). Beam moves records as values only (keys are
    uids, hashes, shard names and ints), so the default pickling coder is enough; a frozen dataclass of
    primitives also has Beam's deterministic encoding should one ever be used as a key.
    """

    key: str | None
    uid: str
    url: str
    caption: str | None
    queries: tuple[str, ...]
    status: str
    error_message: str | None
    http_status: int | None
    width: int | None
    height: int | None
    original_width: int | None
    original_height: int | None
    sha256: str | None
    phash: str | None
    bytes: int | None
    # stage 2's caption language (keyword-only with a default: raw rows of older runs have none)
    lang: str | None = dataclasses.field(default=None, kw_only=True)
    lang_score: float | None = dataclasses.field(default=None, kw_only=True)
    shard: str | None
    duplicate_of: str | None
    raw_shard: str
    raw_key: str | None
    row: int
    raw_rows: int
    raw_status: str
    reason: str
    hash_source: str = "raw"
    image: ImageLocation | None = None
    index: int | None = None

    def final_row(self) -> dict[str, Any]:
        """The FINAL_ROWS columns as a dict (``queries`` as a list), for parquet rows and sample json."""
        row = {name: getattr(self, name) for name in FINAL_ROW_NAMES}
        row["queries"] = list(self.queries)
        return row

    def replace(self, **changes: Any) -> RawRecord:
        """A copy with ``changes`` applied (``dataclasses.replace``); unknown names raise TypeError."""
        return dataclasses.replace(self, **changes)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickled (Beam's fallback for values without a coder, e.g. tagged outputs) by position instead of the
        # default dict of field names: 466 instead of 728 bytes, encode+decode about 1.6x faster. __dict__ holds
        # the fields in field order (__init__ and record_from_values both set them so).
        return record_from_values, (tuple(self.__dict__.values()),)


FINAL_ROW_NAMES: tuple[str, ...] = tuple(FINAL_ROWS.names)
RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RawRecord))  # in field order


def record_from_values(values: tuple[Any, ...] | list[Any]) -> RawRecord:
    """The RawRecord of its field values in RECORD_FIELDS order, set directly without ``__init__`` (for values
    taken from a valid record: unpickling, Beam's coder); ValueError when the count differs."""
    record = object.__new__(RawRecord)
    record.__dict__.update(zip(RECORD_FIELDS, values, strict=True))
    return record
if tuple(f.name for f in dataclasses.fields(RawRecord))[: len(FINAL_ROW_NAMES)] != FINAL_ROW_NAMES:
    raise AssertionError("schemas.finalize.RawRecord's first fields must be FINAL_ROWS' columns, in order")
