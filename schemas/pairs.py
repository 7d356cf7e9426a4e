"""Stage 2 (build-pairs) outputs: ``pairs-*.parquet`` and ``query_counts.parquet``.

``pairs-*.parquet`` is also valid img2dataset input (``--input_format parquet --url_col url
--caption_col caption --save_additional_columns '["uid","queries"]'``).
"""

from __future__ import annotations

import pyarrow as pa

PAIRS = pa.schema(
    [
        pa.field("uid", pa.string(), nullable=False),       # 32 hex chars, stable hash of normalized url + caption
        pa.field("url", pa.string(), nullable=False),
        pa.field("caption", pa.string(), nullable=False),
        pa.field("queries", pa.list_(pa.string()), nullable=False),  # matched queries that kept this pair
        # provenance
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_record", pa.int64(), nullable=False),  # record offset/index within source_file
        pa.field("page_url", pa.string(), nullable=True),       # WAT/WARC: the page the image appeared on
        # every query found in the caption (a superset of ``queries``): re-balance with another cap, no re-match
        pa.field("matched_queries", pa.list_(pa.string()), nullable=False),
        # the match rule that matched ``queries`` (wit_builder.pairs.match_rules): pairs of two rules never mix
        pa.field("match_rule", pa.string(), nullable=False),
        # the caption's language (wit_builder.pairs.langid: a Wikipedia code, "und" when unsure) and the language
        # ID model's probability of it; the queries it was matched against are that language's ("und": English)
        pa.field("lang", pa.string(), nullable=False),
        pa.field("lang_score", pa.float32(), nullable=False),
    ],
    metadata={"wit.table": "pairs"},
)

QUERY_COUNTS = pa.schema(
    [
        pa.field("query", pa.string(), nullable=False),
        pa.field("lang", pa.string(), nullable=False),  # the query's language (its queries folder's)
        pa.field("matched", pa.int64(), nullable=False),
        pa.field("kept", pa.int64(), nullable=False),
    ],
    metadata={"wit.table": "query_counts"},
)

PAIRS_GLOB = "pairs-*.parquet"
QUERY_COUNTS_PARQUET = "query_counts.parquet"
STATS_JSON = "stats.json"
BALANCE_PNG = "balance.png"
