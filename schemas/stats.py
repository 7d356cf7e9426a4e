"""The one ``stats.json`` layout that every Beam stage writes in its output folder (written last: its presence
marks a complete output).

    {"stage": "build-queries" | "build-pairs" | "download" | "finalize",
     "version": 1,
     "inputs":  [{"path": str, "sha256": str | null, "bytes": int | null, "rows": int | null}, ...],
     "parameters": {...the command's settings as JSON...},
     "counts":  {"<name>": int, ...},        # flat: records in/out and every drop reason, from the data
     "outputs": [{"path": str, "rows": int | null}, ...],  # relative to the folder holding stats.json
     "timings": {"seconds": float, ...},
     "details": {...stage-specific: per-source tables, thresholds, the rule used, ...}}

``parameters`` and ``outputs`` hold no output location, so the same inputs give the same document wherever it
is written (only ``timings`` differ between identical runs). ``counts`` are computed from the pipeline's own
outputs (combiners whose result is written to a file), never from Beam metrics: a runner that reports only
attempted metrics counts a retried bundle twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from wit_builder.core.errors import InputError

STATS_JSON = "stats.json"
VERSION = 1
STAGES: tuple[str, ...] = ("build-queries", "build-pairs", "download", "finalize")
KEYS: tuple[str, ...] = ("stage", "version", "inputs", "parameters", "counts", "outputs", "timings", "details")
_INPUT_KEYS = {"path": str, "sha256": (str, type(None)), "bytes": (int, type(None)), "rows": (int, type(None))}
_OUTPUT_KEYS = {"path": str, "rows": (int, type(None))}


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float as the string ``"inf"``, ``"-inf"`` or ``"nan"`` (dict keys and other
    values unchanged), so the JSON written is standard (RFC 8259 has no Infinity/NaN) and reads back equal."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


class StatsError(InputError):
    """A stats document that does not follow the layout; the message names the key and what is wrong."""


def input_entry(path: str, sha256: str | None = None, size: int | None = None, rows: int | None = None) -> dict:
    """One ``inputs`` item (``size`` in bytes)."""
    return {"path": path, "sha256": sha256, "bytes": size, "rows": rows}


def output_entry(path: str, rows: int | None = None) -> dict:
    """One ``outputs`` item."""
    return {"path": path, "rows": rows}


def envelope(stage: str, *, inputs: Iterable[Mapping[str, Any]], parameters: Mapping[str, Any],
             counts: Mapping[str, int], outputs: Iterable[Mapping[str, Any]], seconds: float,
             timings: Mapping[str, float] | None = None, details: Mapping[str, Any] | None = None) -> dict:
    """A validated stats document; counts are sorted by name. Raises StatsError."""
    doc = {
        "stage": stage, "version": VERSION,
        "inputs": [dict(i) for i in inputs],
        "parameters": dict(parameters),
        "counts": {k: int(v) for k, v in sorted(counts.items())},
        "outputs": [dict(o) for o in outputs],
        "timings": {"seconds": float(seconds), **{k: float(v) for k, v in (timings or {}).items()}},
        "details": dict(details or {}),
    }
    validate(doc)
    return doc


def _check_items(doc: Mapping[str, Any], key: str, fields: Mapping[str, Any]) -> None:
    items = doc[key]
    if not isinstance(items, list):
        raise StatsError(f"stats.json: {key} must be a list, got {type(items).__name__}")
    for n, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != set(fields):
            raise StatsError(f"stats.json: {key}[{n}] must have exactly the keys {sorted(fields)}, got {item!r}")
        for name, kind in fields.items():
            value = item[name]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise StatsError(f"stats.json: {key}[{n}].{name} has the wrong type: {value!r}")
            if isinstance(value, int) and value < 0:
                raise StatsError(f"stats.json: {key}[{n}].{name} is negative: {value}")


def validate(doc: Any) -> None:
    """Check ``doc`` against the layout above; raises StatsError naming the first problem."""
    if not isinstance(doc, dict):
        raise StatsError(f"stats.json must be a JSON object, got {type(doc).__name__}")
    if set(doc) != set(KEYS):
        missing, extra = sorted(set(KEYS) - set(doc)), sorted(set(doc) - set(KEYS))
        raise StatsError(f"stats.json: top-level keys must be {list(KEYS)}; missing {missing}, unexpected {extra}")
    if doc["stage"] not in STAGES:
        raise StatsError(f"stats.json: stage must be one of {STAGES}, got {doc['stage']!r}")
    if doc["version"] != VERSION:
        raise StatsError(f"stats.json: version must be {VERSION}, got {doc['version']!r}")
    _check_items(doc, "inputs", _INPUT_KEYS)
    _check_items(doc, "outputs", _OUTPUT_KEYS)
    for key in ("parameters", "details", "counts", "timings"):
        if not isinstance(doc[key], dict):
            raise StatsError(f"stats.json: {key} must be an object, got {type(doc[key]).__name__}")
    for name, value in doc["counts"].items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise StatsError(f"stats.json: counts.{name} must be a non-negative integer, got {value!r}")
    if "seconds" not in doc["timings"]:
        raise StatsError("stats.json: timings.seconds is missing")
    for name, value in doc["timings"].items():
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise StatsError(f"stats.json: timings.{name} must be a non-negative number of seconds, got {value!r}")


def stats_without_timings(path: Any) -> dict:
    """A stats.json file's document without ``timings`` (the part that differs between identical runs)."""
    import json
    from pathlib import Path

    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    validate(doc)
    return {k: v for k, v in doc.items() if k != "timings"}


def prefixed(counts: Mapping[str, int], prefix: str) -> dict[str, int]:
    """``{name: n}`` of the counts named ``prefix + name``, e.g. ``prefixed(counts, "status_")``."""
    return {k[len(prefix):]: v for k, v in counts.items() if k.startswith(prefix)}
