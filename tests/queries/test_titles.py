"""Title traffic: a redirect's traffic lands on its target, an article's score is its landed traffic."""

from __future__ import annotations

from wit_builder.queries import titles


def test_redirect_traffic_lands_on_the_target():
    assert titles.landing_title("Nyc", [120, 30], ["New York City"]) == ("New York City", 150)
    assert titles.landing_title("Paris", [40], []) == ("Paris", 40)
    assert titles.landing_title("Zzz", [0], ["Z"]) is None and titles.landing_title("Zzz", [], []) is None
    assert titles.landing_title("Ambiguous", [5], ["B", "A"]) == ("A", 5)  # the smallest target


def test_articles_score_their_queries():
    assert titles.article_scores(["new york city", "new york city"], [100, 50]) == [("new york city", 150)]
    assert titles.article_scores([], [100]) == []  # traffic of a title that is not an article
    assert titles.article_scores(["louvre"], []) == [("louvre", 0)]  # an article nobody visits or links to
