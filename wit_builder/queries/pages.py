"""What one page of a dump gives stage 1, as values: the rule of pass 1, without Beam.

:func:`judge_page` yields, for one :class:`~wit_builder.queries.wikidump.Page`:

- ``Drop(reason)`` for each reason (:data:`SKIP_REASONS`) the page, or its title, is not used; a bad record
  (:data:`BAD_PAGE_REASONS`) carries a :data:`RejectedPage` for ``stats.json``'s examples and the log;
- :class:`Redirect` for a main-namespace redirect (not text; its traffic counts for its target);
- :class:`ArticleText` for a main-namespace article: its plain text and the articles it links to (the text
  counts even when the title does not become a query);
- :class:`TitleQuery` for an article whose title can be a query (not a disambiguation page, a letter in it).

The frame (``pipeline._ExtractPages``) counts every Drop under its reason; nothing here keeps a tally.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from wit_builder.core.verdicts import Drop
from wit_builder.queries.parse_budget import ParseTimeout
from wit_builder.queries.selection import title_query
from wit_builder.queries.wikidump import Page
from wit_builder.queries.wikitext import Article, WikitextError, canonical_title

# Why a page, range or title is not used; each is a count of stats.json (and a key of its "skipped" reasons).
SKIP_REASONS = (
    "pages_malformed",  # a <page> without title, ns or id
    "pages_not_main_namespace",
    "pages_redirect",  # not text; its traffic counts for its target
    "pages_wikitext_rejected",  # mwparserfromhell failed, or the text is over MediaWiki's 2 MiB limit
    "pages_parse_timeout",  # the parse ran past --parse-timeout seconds (or its memory limit): page skipped
    "titles_disambiguation",  # the article is text, its title names no single thing
    "titles_without_letters",  # "1990", "!!!"
    "dump_ranges_empty",  # an empty dump (or a range of one without pages): counted per range, not here
)
BAD_PAGE_REASONS = ("pages_malformed", "pages_wikitext_rejected", "pages_parse_timeout")  # bad records
RejectedPage = tuple[str, int, Any, Any, str]  # (path, byte offset, page id, title, why): sorts by place


@dataclass(frozen=True)
class Redirect:
    """A redirect page: its canonical title and the canonical title it points to."""

    title: str
    target: str


@dataclass(frozen=True)
class ArticleText:
    """A main-namespace article: its plain text (``wikitext.plain_text``) and the canonical titles it links to
    (links to itself left out)."""

    text: str
    links: tuple[str, ...]


@dataclass(frozen=True)
class TitleQuery:
    """An article title that can be a query: the canonical title and its normalized query."""

    title: str
    query: str


PageVerdict = Drop | Redirect | ArticleText | TitleQuery


def _rejected(reason: str, page: Page, why: str) -> Drop:
    return Drop(reason, (page.path, page.offset, page.page_id, page.title, why))


def judge_page(page: Page, parse: Callable[[str], Article], lang: str | None = None) -> Iterator[PageVerdict]:
    """Stage 1's values of one page (see the module docstring), in this order of rules:

    a page without title/ns/id -> ``pages_malformed``; not namespace 0 -> ``pages_not_main_namespace``; a
    redirect -> :class:`Redirect` and ``pages_redirect``; ``parse`` (``BoundedParser.parse``) raising
    ``ParseTimeout`` or running out of memory -> ``pages_parse_timeout``, another ``WikitextError`` ->
    ``pages_wikitext_rejected``; else :class:`ArticleText`, then :class:`TitleQuery`, or
    ``titles_disambiguation``, or ``titles_without_letters`` (``selection.title_query`` gives none; ``lang``
    is the dump's language, whose segmenter splits the title).
    """
    if page.problem is not None:
        yield _rejected("pages_malformed", page, page.problem)
        return
    if page.ns != 0:
        yield Drop("pages_not_main_namespace")
        return
    title = canonical_title(page.title)
    if page.redirect is not None:
        yield Redirect(title, canonical_title(page.redirect))
        yield Drop("pages_redirect")
        return
    try:
        article = parse(page.text)
    except ParseTimeout as err:
        yield _rejected("pages_parse_timeout", page, str(err))
        return
    except WikitextError as err:  # the parser process dies over its memory limit: a budget, like the time
        reason = "pages_parse_timeout" if "memory limit" in str(err) else "pages_wikitext_rejected"
        yield _rejected(reason, page, str(err))
        return
    yield ArticleText(article.text, tuple(target for target in article.links if target != title))
    if article.disambiguation:
        yield Drop("titles_disambiguation")
    elif (query := title_query(title, lang)) is None:
        yield Drop("titles_without_letters")
    else:
        yield TitleQuery(title, query)
