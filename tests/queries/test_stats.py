"""Stage 1's counts, stats.json figures, summary line and failure messages (wit_builder.queries.stats), without
Beam."""

from __future__ import annotations

import pytest

from schemas.queries import SOURCES
from schemas.stats import validate as validate_stats
from wit_builder.queries import selection as qs
from wit_builder.queries import stats as query_stats
from wit_builder.queries.options import BuildQueriesOptions
from wit_builder.queries.pages import SKIP_REASONS
from wit_builder.queries.pageviews import PageviewError, Traffic
from wit_builder.queries.wikidump import DumpInput


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
    traffic = Traffic("de.wikipedia", "desktop")
    files = {"pv-1.gz": {"rows": 0, "other": 120, "malformed": 0}, "pv-2.gz": {"rows": 0, "other": 5, "malformed": 1}}
    with pytest.raises(PageviewError, match=r"pv-1.gz.*de.wikipedia \(desktop\): their 125 rows are other projects"):
        query_stats.check_pageview_rows(files, traffic)
    query_stats.check_pageview_rows({"pv-1.gz": {"rows": 1, "other": 0}}, traffic)
    query_stats.check_pageview_rows({}, None)  # inlinks: nothing to check


def test_count_names_are_every_count_of_stats_json_once():
    names = query_stats.COUNT_NAMES
    assert len(set(names)) == len(names) and set(SKIP_REASONS) <= set(names)
    per_source = {f"{kind}_{source}" for source in SOURCES for kind in ("eligible", "selected", "already_taken")}
    assert per_source <= set(names)
    assert set(query_stats.BAD_RECORDS) <= set(names) and "queries" in names and "total_tokens" in names


def test_selection_counts_and_the_source_table_come_from_the_data():
    summary = {s: qs.SourceSummary(selected=i + 1, already_taken=i) for i, s in enumerate(SOURCES)}
    eligible = {s: 10 * (i + 1) for i, s in enumerate(SOURCES)}
    counts = query_stats.selection_counts(eligible, summary)
    assert counts["selected_" + SOURCES[0]] == 1 and counts["already_taken_" + SOURCES[1]] == 1
    assert counts["eligible_" + SOURCES[3]] == 40 and counts["queries"] == sum(range(1, len(SOURCES) + 1))
    assert set(counts) == set(query_stats.SELECTION_COUNTS) | {"queries"}
    table = query_stats.source_table(counts, {s: 100 for s in SOURCES})
    assert list(table) == list(SOURCES)
    assert table[SOURCES[0]] == {"eligible": 10, "selected": 1, "already_taken": 0, "budget": 100}


def test_details_document_keeps_what_is_not_a_count():
    rejected = {"pages_malformed": [("d.xml", 5, 1, "T", "no id")],
                "pages_parse_timeout": [("d.xml", 9, 2, "S", "5 s")]}
    files = {"pv.gz": {"rows": 90, "other": 10, "malformed": 2}}
    details = query_stats.details_document(rejected, Traffic("en.wikipedia"), files)
    assert details["rejected_pages"]["pages_malformed"] == [
        {"path": "d.xml", "offset": 5, "page_id": 1, "title": "T", "why": "no id"}]
    assert list(details["rejected_pages"]) == ["pages_malformed", "pages_parse_timeout"]
    assert details["traffic"] == {"source": "pageviews", "wiki": "en.wikipedia", "sites": ["desktop", "mobile"],
                                  "files": files}
    assert query_stats.details_document({}, None, {}) == {"language": {}, "rejected_pages": {},
                                                          "traffic": {"source": "inlinks"}}


def test_stats_document_puts_counts_settings_and_details_together():
    options = BuildQueriesOptions(dump=("d-*.xml.bz2",), out="/tmp/q", pageviews=("pv.gz",),
                                  budgets=qs.Budgets(max_queries=1000))
    counts = {name: 0 for name in query_stats.COUNT_NAMES} | {"pageview_rows": 90, "queries": 12, "selected_title": 12}
    details = query_stats.details_document({}, options.traffic, {"pv.gz": {"rows": 90, "other": 1, "malformed": 0}})
    dumps = [DumpInput("d-1.xml.bz2", "d-1-index.txt.bz2")]
    doc = query_stats.stats_document(options, dumps, ["pv.gz"], counts, details, {"d-1.xml.bz2": "ab" * 32}, 3.0)
    validate_stats(doc)
    assert query_stats.input_paths(dumps, ["pv.gz"]) == ["d-1.xml.bz2", "d-1-index.txt.bz2", "pv.gz"]
    assert doc["counts"] == counts and doc["timings"] == {"seconds": 3.0}
    assert doc["inputs"] == [
        {"path": "d-1.xml.bz2", "sha256": "ab" * 32, "bytes": None, "rows": None},
        {"path": "d-1-index.txt.bz2", "sha256": None, "bytes": None, "rows": None},
        {"path": "pv.gz", "sha256": None, "bytes": None, "rows": 90}]
    assert doc["outputs"] == [{"path": "queries.parquet", "rows": 12}, {"path": "queries.txt", "rows": 12}]
    assert "out" not in doc["parameters"] and doc["parameters"]["max_queries"] == 1000
    d = doc["details"]
    assert d["budgets"]["requested"] == {"unigram": 251_465, "bigram": 100_646, "title": 61_235, "wordnet": 86_654,
                                         "max_queries": 1000}
    assert d["budgets"]["applied"] == {"unigram": 503, "bigram": 201, "title": 123, "wordnet": 173}
    assert d["sources"]["title"] == {"eligible": 0, "selected": 12, "already_taken": 0, "budget": 123}
    assert d["thresholds"] == {"min_unigram_count": 100, "min_bigram_count": 30}
    assert d["parse_budget"] == {"seconds": 5.0, "memory_bytes": 2 << 30}
    assert d["title_traffic"] == "pageviews" and d["wordnet_dir"] is None and d["rejected_pages"] == {}


def test_summary_names_queries_per_source_and_the_bad_records():
    counts = {name: 0 for name in query_stats.COUNT_NAMES} | {
        "queries": 1234, "selected_unigram": 1000, "selected_title": 234, "articles": 5678,
        "pages_malformed": 1, "dump_ranges_empty": 2, "pageview_lines_malformed": 3, "pages_redirect": 99}
    assert query_stats.summary(counts, 2) == [
        "1,234 queries (unigram 1000, bigram 0, title 234, wordnet 0) from 5,678 articles in 2 dump(s)",
        "6 bad records skipped"]
