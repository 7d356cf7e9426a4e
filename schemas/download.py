"""Stage 3 (download) outputs, in img2dataset's layout so that stage 4 reads either engine's output.

Per url shard ``{shard}``: ``{shard}.tar`` (``KEY.jpg``/``KEY.webp``, ``KEY.txt``, ``KEY.json`` for each
success), ``{shard}.parquet`` (every input row of the shard with its status), ``{shard}_stats.json``.
"""

from __future__ import annotations

import pyarrow as pa

# Raw statuses a download can end with. img2dataset writes "failed_to_resize" for what we call
# "failed_to_decode"; stage 4 maps it (see RAW_STATUS_ALIASES).
RAW_STATUSES: tuple[str, ...] = ("success", "failed_to_download", "failed_to_decode", "blocked", "filtered")
RAW_STATUS_ALIASES: dict[str, str] = {"failed_to_resize": "failed_to_decode"}

RAW_ROWS = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),          # shard-local sample key, no dots
        pa.field("uid", pa.string(), nullable=False),
        pa.field("url", pa.string(), nullable=False),
        pa.field("caption", pa.string(), nullable=True),
        pa.field("queries", pa.list_(pa.string()), nullable=True),
        pa.field("status", pa.string(), nullable=False),       # one of RAW_STATUSES
        pa.field("error_message", pa.string(), nullable=True),
        pa.field("http_status", pa.int32(), nullable=True),
        pa.field("width", pa.int32(), nullable=True),
        pa.field("height", pa.int32(), nullable=True),
        pa.field("original_width", pa.int32(), nullable=True),
        pa.field("original_height", pa.int32(), nullable=True),
        pa.field("sha256", pa.string(), nullable=True),        # of the original downloaded bytes
        pa.field("phash", pa.string(), nullable=True),         # 64-bit perceptual hash, 16 hex chars
        pa.field("bytes", pa.int64(), nullable=True),          # size of the original download
        pa.field("lang", pa.string(), nullable=True),          # the caption's language, from the pairs (stage 2)
        pa.field("lang_score", pa.float32(), nullable=True),   # its language ID probability, from the pairs
    ],
    metadata={"wit.table": "raw_rows"},
)
