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
