"""JSON as RFC 8259 defines it, for every file and line we write: no ``NaN`` or ``Infinity`` tokens (Python's
``json`` writes them by default; ``jq``, JavaScript's ``JSON.parse``, Go and Rust readers refuse them).

A float that is not finite (a loss that turned nan, a rate over zero seconds) is written as ``null``: the
reader sees "no value" rather than a parse error; the writer decides whether such a value is an error.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every non-finite float, at any depth of dicts, lists and tuples, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of ``value`` with non-finite floats as null (``finite``) and ``allow_nan=False``, so a
    non-finite value that slips past (a numpy float) raises instead of writing invalid JSON."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)
