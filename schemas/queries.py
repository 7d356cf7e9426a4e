"""Stage 1 (build-queries) outputs: ``queries.parquet`` and the ``source`` vocabulary."""

from __future__ import annotations

import pyarrow as pa

SOURCES: tuple[str, ...] = ("unigram", "bigram", "title", "wordnet")

QUERIES = pa.schema(
    [
        pa.field("query", pa.string(), nullable=False),   # normalized per wit_builder.core.textnorm
        pa.field("source", pa.string(), nullable=False),  # one of SOURCES
        pa.field("count", pa.int64(), nullable=False),    # occurrences in the dump's plain text
        pa.field("score", pa.float64(), nullable=False),  # the source's ranking score
    ],
    metadata={"wit.table": "queries"},
)

QUERIES_PARQUET = "queries.parquet"
QUERIES_TXT = "queries.txt"
STATS_JSON = "stats.json"
