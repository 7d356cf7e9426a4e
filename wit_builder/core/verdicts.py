"""A rule's verdict that a record leaves its stage, as a value. No Beam: the pure rule modules of every stage
return it, and the Beam frame (:mod:`wit_builder.beam.counting`: ``RuleDoFn``, ``CountingDoFn.judge``) counts it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Drop:
    """A rule's verdict that a record leaves the stage, as a value: ``reason`` is the name it is counted under
    (``bad_url``, ``pages_malformed``, ``duplicate_exact``); ``record`` is what a bad-records list keeps of it
    (file, offset, ...), if anything. Rules return it; the frame (:class:`~wit_builder.beam.counting.RuleDoFn`,
    :meth:`~wit_builder.beam.counting.CountingDoFn.judge`) counts it, so no rule keeps a tally of its own
    (datatrove's ``filter() -> bool | (False, reason)``)."""

    reason: str
    record: Any = None
