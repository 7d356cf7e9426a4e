"""``wit_builder.pairs.balance_plot``: the rank plot is a PNG, the same bytes for the same counts."""

from __future__ import annotations

from wit_builder.pairs.balance_plot import balance_png


def test_same_counts_same_png() -> None:
    first = balance_png([30, 0, 5, 12], [12, 0, 5, 12], cap=12, target=12)
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    assert balance_png([30, 0, 5, 12], [12, 0, 5, 12], cap=12, target=12) == first
    assert balance_png([30, 5], [18, 5], cap=12, target=18) != first  # the oversampled target gets its own line
    assert balance_png([], [], cap=3, target=3)[:8] == b"\x89PNG\r\n\x1a\n"  # nothing matched: still a plot
    per_language = balance_png([30, 5, 12, 4], [12, 5, 3, 3], cap=12, target=12, langs=["en", "en", "ja", "ja"],
                               caps={"en": 12, "ja": 3})
    assert per_language[:8] == b"\x89PNG\r\n\x1a\n" and per_language != first  # one pair of lines per language
    assert per_language == balance_png([30, 5, 12, 4], [12, 5, 3, 3], cap=12, target=12,
                                       langs=["en", "en", "ja", "ja"], caps={"en": 12, "ja": 3})
