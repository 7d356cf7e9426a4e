"""``wit_builder.pairs.balance_plot``: the rank plot is a PNG, the same bytes for the same counts."""

from __future__ import annotations

from wit_builder.pairs.balance_plot import balance_png


def test_same_counts_same_png() -> None:
    first = balance_png([30, 0, 5, 12], [12, 0, 5, 12], cap=12, target=12)
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    assert balance_png([30, 0, 5, 12], [12, 0, 5, 12], cap=12, target=12) == first
    assert balance_png([30, 5], [18, 5], cap=12, target=18) != first  # the oversampled target gets its own line
    assert balance_png([], [], cap=3, target=3)[:8] == b"\x89PNG\r\n\x1a\n"  # nothing matched: still a plot
