"""Stage 1's pure joins, messages and stats figures (wit_builder.queries.stats), without Beam."""

from __future__ import annotations

import pytest

from schemas.queries import SOURCES
from wit_builder.queries import selection as qs
from wit_builder.queries import stats as query_stats
from wit_builder.queries.pageviews import PageviewError, Traffic


def test_redirect_traffic_lands_on_the_target_and_articles_score_their_queries():
    assert query_stats.landing_title("Nyc", [120, 30], ["New York City"]) == ("New York City", 150)
    assert query_stats.landing_title("Paris", [40], []) == ("Paris", 40)
    assert query_stats.landing_title("Zzz", [0], ["Z"]) is None and query_stats.landing_title("Zzz", [], []) is None
    assert query_stats.landing_title("Ambiguous", [5], ["B", "A"]) == ("A", 5)  # the smallest target
    assert query_stats.article_scores(["new york city", "new york city"], [100, 50]) == [("new york city", 150)]
    assert query_stats.article_scores([], [100]) == []  # traffic of a title that is not an article
    assert query_stats.with_token_count([42], [("new york", 7), ("york city", 3)]) == [("new york", 7, 42),
                                                                                      ("york city", 3, 42)]
    assert query_stats.with_token_count([], [("xq zz", 2)]) == [("xq zz", 2, 0)]
    candidates = [qs.Candidate(q, 0, 1.0) for q in ("paris", "new york", "new york city")]
    assert query_stats.short_phrases(candidates) == frozenset({"paris", "new york"})


def test_prune_sizes_are_cumulative_budgets_in_source_order():
    budgets = {"unigram": 100, "bigram": 30, "title": 50, "wordnet": 20}
    sizes = query_stats.prune_sizes(budgets)
    running = 0
    for source in SOURCES:
        running += budgets[source]
        assert sizes[source] == running
    with pytest.raises(KeyError):
        query_stats.prune_sizes({"unigram": 1})


def test_no_text_message_names_the_first_rejected_page_or_the_missing_articles():
    rejected = {"pages_parse_timeout": [("b.xml", 900, 12, "Slow", "over 5 s")],
                "pages_malformed": [("a.xml", 10, None, None, "no <title>"), ("a.xml", 400, 3, "X", "no <id>")]}
    tally = {"pages_read": 3, "pages_malformed": 2, "pages_parse_timeout": 1, "articles": 0}
    message = query_stats.no_text_message(["a.xml", "b.xml"], tally, rejected)
    assert message.startswith("every page of the dumps ['a.xml', 'b.xml'] was rejected (3 pages read: "
                              "2 pages_malformed, 1 pages_parse_timeout)")
    assert message.endswith("the first, page id None None in a.xml at byte 10, for pages_malformed: no <title>")
    quiet = query_stats.no_text_message(["a.xml"], {"pages_read": 4, "pages_redirect": 4}, {})
    assert quiet == ("no main-namespace article text in the dumps ['a.xml'] (4 pages read: 4 pages_redirect): "
                     "nothing to build queries from")


def test_pageview_files_without_a_row_for_the_project_are_refused():
    traffic = Traffic("de.wikipedia", frozenset({"desktop"}))
    files = {"pv-1.gz": {"rows": 0, "other": 120, "malformed": 0}, "pv-2.gz": {"rows": 0, "other": 5, "malformed": 1}}
    with pytest.raises(PageviewError, match=r"pv-1.gz.*de.wikipedia \(desktop\): their 125 rows are other projects"):
        query_stats.check_pageview_rows(files, traffic)
    query_stats.check_pageview_rows({"pv-1.gz": {"rows": 1, "other": 0}}, traffic)
    query_stats.check_pageview_rows({}, None)  # inlinks: nothing to check


def test_details_and_stats_counts_come_from_the_data():
    summary = {s: qs.SourceSummary(selected=i + 1, already_taken=i) for i, s in enumerate(SOURCES)}
    eligible = {s: 10 * (i + 1) for i, s in enumerate(SOURCES)}
    selection = query_stats.selection_counts(eligible, summary)
    assert selection["selected_" + SOURCES[0]] == 1 and selection["already_taken_" + SOURCES[1]] == 1
    tally = {"pages_read": 206, "articles": 150, "pages_redirect": 30}
    rejected = {"pages_malformed": [("d.xml", 5, 1, "T", "no id")]}
    files = {"pv.gz": {"rows": 90, "other": 10, "malformed": 2}}
    details = query_stats.details_document(tally, 12_345, selection, rejected, Traffic(), files)
    assert details["counts"]["total_tokens"] == 12_345 and details["counts"]["pages_read"] == 206
    assert details["rejected_pages"] == {"pages_malformed": [
        {"path": "d.xml", "offset": 5, "page_id": 1, "title": "T", "why": "no id"}]}
    assert details["traffic"]["source"] == "pageviews" and details["traffic"]["files"] == files
    budgets = {s: 100 for s in SOURCES}
    flat, sources = query_stats.stats_counts(details, budgets, ("pages_redirect", "pages_malformed"))
    assert flat["pages_redirect"] == 30 and flat["pages_malformed"] == 0 and flat["pageview_rows"] == 90
    assert flat["pageview_lines_malformed"] == 2 and flat["queries"] == sum(range(1, len(SOURCES) + 1))
    assert sources[SOURCES[0]] == {"eligible": 10, "selected": 1, "already_taken": 0, "budget": 100}
    inlinks = query_stats.details_document(tally, 1, selection, {}, None, {})
    assert inlinks["traffic"] == {"source": "inlinks"}
    assert query_stats.stats_counts(inlinks, budgets, ())[0]["pageview_rows"] == 0
