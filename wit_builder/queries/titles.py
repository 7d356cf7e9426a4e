"""How a title candidate's score is computed from traffic, as pure functions (``pipeline.ScoreTitles`` joins).

Traffic is pageviews (``--pageviews``, :mod:`wit_builder.queries.pageviews`) or, without them, incoming links
from main-namespace articles; both are keyed by canonical title. A redirect's traffic lands on its target
(:func:`landing_title`), and an article's score is the traffic landed on its title (:func:`article_scores`);
several articles with the same query add up (``CombinePerKey(sum)`` after this).
"""

from __future__ import annotations

from collections.abc import Iterable


def landing_title(title: str, traffic: Iterable[int], redirect_targets: Iterable[str]) -> tuple[str, int] | None:
    """(the title a page's traffic lands on, the traffic): the redirect's target when ``title`` is a redirect
    (the smallest target if a dump names several), else the title itself; None without traffic."""
    total = sum(traffic)
    if not total:
        return None
    targets = sorted(redirect_targets)
    return (targets[0] if targets else title), total


def article_scores(queries: Iterable[str], traffic: Iterable[int]) -> list[tuple[str, int]]:
    """(query, traffic) for each distinct query of a title that is an article (sorted); none for a title that
    only has traffic."""
    total = sum(traffic)
    return [(query, total) for query in sorted(set(queries))]
