"""The dataset card and its plots (wit_builder.finalize.dataset_card): pure functions of the stats."""

from __future__ import annotations

from tests.finalize.examples import QUERIES, STATS
from wit_builder.finalize import dataset_card


def test_size_bins_cover_every_side_length():
    assert [dataset_card.size_bin(n) for n in (0, 63, 64, 4095, 4096, None)] == [
        "0-63", "0-63", "64-127", "2048-4095", "4096+", "unknown"]
    assert dataset_card.size_bin_labels()[-2:] == ["4096+", "unknown"]


def test_the_card_states_the_settings_counts_and_queries():
    card = dataset_card.render_card(STATS, QUERIES)
    assert "| near duplicates | pHash Hamming distance <= 4 |" in card
    assert "| per-query cap | 3 (seed 7) |" in card and "| decontamination | pHash distance <= 4 |" in card
    assert "| success | 2 | 50.00% |" in card and "| exact_duplicate | 1 |" in card
    assert "| sun \\| star | 1 | 1 |" in card  # a query's "|" cannot break the table
    assert "- 2 samples in 1 shards (`{00000..00000}.tar`)" in card
    assert dataset_card.render_card(STATS, QUERIES) == card


def test_the_plots_are_reproducible_pngs():
    for plot in (lambda: dataset_card.plot_image_sizes(STATS["image_sizes"]),
                 lambda: dataset_card.plot_query_counts(QUERIES, 3)):
        first = plot()
        assert first[:8] == b"\x89PNG\r\n\x1a\n" and plot() == first


def test_the_query_plot_of_an_empty_dataset_warns_nothing(recwarn):
    # every row dropped (or a --uids list that matched none): the plot is drawn without a legend, and no
    # matplotlib warning reaches the user's stderr
    png = dataset_card.plot_query_counts([("sun", 0, 0)], None)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [w for w in recwarn if "legend" in str(w.message)]
