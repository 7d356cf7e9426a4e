"""The ``.json`` record stored beside every image in the final WebDataset shards (stage 4)."""

from __future__ import annotations

SAMPLE_JSON_FIELDS: tuple[str, ...] = (
    "key", "uid", "url", "caption", "queries", "status",
    "width", "height", "original_width", "original_height",
    "sha256",  # of the original downloaded bytes
    "phash",   # 64-bit perceptual hash, 16 hex chars
    "lang", "lang_score",  # the caption's language from stage 2 (wit_builder.pairs.langid), for per-language balance
)
