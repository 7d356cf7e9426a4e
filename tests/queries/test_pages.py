"""The page rule of pass 1 (wit_builder.queries.pages): each kind of page gives its values and drop reasons."""

from __future__ import annotations

import pytest

from wit_builder.core.verdicts import Drop
from wit_builder.queries.pages import BAD_PAGE_REASONS, SKIP_REASONS, ArticleText, Redirect, TitleQuery, judge_page
from wit_builder.queries.parse_budget import ParseTimeout
from wit_builder.queries.wikidump import Page
from wit_builder.queries.wikitext import Article, WikitextError, parse_article


def page(title: str = "Paris", text: str = "[[Eiffel Tower|The tower]] is in [[Paris]].", ns: int = 0,
         redirect: str | None = None, problem: str | None = None) -> Page:
    return Page(title, ns, 7, redirect, text, "d.xml", 1024, problem)


def fails(error: Exception):
    def parse(text: str) -> Article:
        raise error
    return parse


def test_an_article_gives_its_text_its_links_and_its_title():
    verdicts = list(judge_page(page(), parse_article))
    assert verdicts == [ArticleText("The tower is in Paris.", ("Eiffel Tower",)), TitleQuery("Paris", "paris")]


def test_pages_that_are_not_text_are_dropped_with_their_reason():
    assert list(judge_page(page(ns=1, title="Talk:Paris"), parse_article)) == [Drop("pages_not_main_namespace")]
    assert list(judge_page(page(title="tour_Eiffel", redirect="eiffel Tower", text=""), parse_article)) == [
        Redirect("Tour Eiffel", "Eiffel Tower"), Drop("pages_redirect")]  # canonical titles on both sides


@pytest.mark.parametrize(("error", "reason"), [
    (ParseTimeout("parsing took more than the 5 s budget per page"), "pages_parse_timeout"),
    (WikitextError("parsing needed more than the 64 MiB memory limit"), "pages_parse_timeout"),
    (WikitextError("mwparserfromhell rejected the wikitext: ParserError: x"), "pages_wikitext_rejected"),
])
def test_a_page_the_parser_refuses_is_a_bad_record_with_its_place(error, reason):
    [verdict] = judge_page(page(), fails(error))
    assert verdict == Drop(reason, ("d.xml", 1024, 7, "Paris", str(error)))
    assert reason in BAD_PAGE_REASONS


def test_a_malformed_page_is_a_bad_record_and_is_not_parsed():
    [verdict] = judge_page(page(problem="missing <id>"), fails(AssertionError("not parsed")))
    assert verdict == Drop("pages_malformed", ("d.xml", 1024, 7, "Paris", "missing <id>"))


def test_titles_that_cannot_be_queries_still_give_their_text():
    disambiguation = list(judge_page(page(title="Mercury", text="'''Mercury''' may be:\n{{disambiguation}}"),
                                     parse_article))
    assert isinstance(disambiguation[0], ArticleText) and disambiguation[1:] == [Drop("titles_disambiguation")]
    year = list(judge_page(page(title="1990", text="A year."), parse_article))
    assert year == [ArticleText("A year.", ()), Drop("titles_without_letters")]


def test_every_reason_judge_page_gives_is_a_declared_skip_reason():
    pages = [page(ns=1), page(redirect="X"), page(problem="p"), page(title="1990"),
             page(text="{{disambiguation}}"), page()]
    reasons = {v.reason for p in pages for v in judge_page(p, parse_article) if isinstance(v, Drop)}
    assert reasons <= set(SKIP_REASONS) and len(reasons) == 5
