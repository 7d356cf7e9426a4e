"""Stage 4 (finalize) outputs: per-shard parquet rows and the final status vocabulary."""

from __future__ import annotations

import pyarrow as pa

from schemas.download import RAW_ROWS

# Every input uid ends in exactly one of these.
FINAL_STATUSES: tuple[str, ...] = (
    "success", "failed_to_download", "failed_to_decode", "blocked", "filtered", "duplicate", "over_cap",
)

# Final rows: the raw row's fields plus where the sample landed and, for duplicates, what it duplicates.
FINAL_ROWS = pa.schema(
    list(RAW_ROWS)
    + [
        pa.field("shard", pa.string(), nullable=True),        # final shard name for successes
        pa.field("duplicate_of", pa.string(), nullable=True),  # uid of the kept sample
    ],
    metadata={"wit.table": "final_rows"},
)

SIZES_JSON = "sizes.json"
STATS_JSON = "stats.json"
DATASET_CARD = "DATASET.md"
