"""A rule's Drop verdict (wit_builder.core.verdicts): a Beam-free value that the Beam frame counts."""

from __future__ import annotations

import dataclasses

import pytest

from wit_builder.core.verdicts import Drop


def test_a_drop_is_a_frozen_value_with_an_optional_record():
    assert Drop("bad_url") == Drop("bad_url", None) != Drop("bad_url", ("a.jsonl", 3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        Drop("bad_url").reason = "other"  # type: ignore[misc]


def test_the_frame_counts_the_same_class():
    from wit_builder.beam import counting

    assert counting.Drop is Drop
    frame = counting.CountingDoFn()
    assert frame.judge(Drop("pages_redirect")) is False and frame.judge("kept") is True
    assert frame._tally == {"pages_redirect": 1}
