"""Wikitext -> plain text: what is kept, what is dropped, and what is rejected."""

from __future__ import annotations

import mwparserfromhell
import pytest

from wit_builder import wikitext
from wit_builder.textnorm import tokenize
from wit_builder.wikidump import DumpRange, read_pages
from wit_builder.wikitext import (
    MAX_WIKITEXT_CHARS,
    WikitextError,
    canonical_title,
    link_namespace,
    parse_article,
    plain_text,
    title_phrase,
)


def test_links_keep_their_visible_text():
    assert plain_text("[[Paris|the city]] and [[bus]]es near [[Louvre#Wings]]") == (
        "the city and buses near Louvre#Wings"
    )


def test_dropped_nodes():
    text = plain_text(
        "A{{Infobox|name=[[X]]}}B<ref>cite</ref>C<ref name=r/>D<!-- hidden -->E{{{arg}}}F"
        "[[File:P.jpg|thumb|a caption]][[Image:Q.png]][[Category:Cats]][[fr:Paris]][[wikt:word|word]]G"
        "<math>x^2</math>H<gallery>I.jpg|cap</gallery>I __NOTOC__"
    )
    assert text == "ABCDEFGHI "


def test_tables_dropped_prose_around_them_kept():
    text = plain_text("Before\n{| class=wikitable\n! head\n|-\n| [[cell]]\n|}\nAfter")
    assert tokenize(text) == ["before", "after"]


def test_kept_nodes():
    text = plain_text("== History ==\n'''Bold''' ''it'' <small>small</small> [http://x.org site] http://bare.org"
                      " &amp; a<br/>b\n* item\n# num\n: indent")
    assert tokenize(text) == ["history", "bold", "it", "small", "site", "a", "b", "item", "num", "indent"]
    assert "&" in text and "http" not in text


def test_article_links_and_disambiguation():
    article = parse_article("See [[paris]], [[Paris|again]], [[Eiffel_Tower#History]], [[File:X.jpg]], "
                            "[[:Category:Towers]] {{cite|[[Seine]]}}\n{{disambiguation}}")
    assert article.links == ("Paris", "Eiffel Tower", "Category:Towers", "Seine")
    assert article.disambiguation
    assert not parse_article("[[Paris]]").disambiguation


def test_link_namespace():
    assert link_namespace("File:X.jpg") == "media" and link_namespace("image:x") == "media"
    assert link_namespace("Category:X") == "category"
    assert link_namespace("de:Paris") == "interwiki" and link_namespace("wikt:foo") == "interwiki"
    assert link_namespace(":Category:X") is None and link_namespace("Star Wars: Episode IV") is None


def test_titles():
    assert canonical_title("eiffel_tower#top") == "Eiffel tower"
    assert canonical_title("  a   b ") == "A b"
    assert title_phrase("Mercury (planet)") == "Mercury" and title_phrase("(Untitled)") == "(Untitled)"


def test_oversized_wikitext_is_rejected():
    with pytest.raises(WikitextError, match="2 MiB"):
        parse_article("x" * (MAX_WIKITEXT_CHARS + 1))


def test_parser_failure_becomes_wikitext_error(monkeypatch):
    class BrokenTokenizer:  # what mwparserfromhell's issues #164/#165 report for some real pages
        def tokenize(self, text, context, skip_style_tags):
            raise mwparserfromhell.parser.ParserError("C tokenizer exited with BAD_ROUTE")

    monkeypatch.setattr(wikitext, "_Tokenizer", BrokenTokenizer)
    with pytest.raises(WikitextError, match="BAD_ROUTE"):
        parse_article("anything")


def test_matches_mwparserfromhell_tree():
    """The token-stream renderer keeps what the node tree holds (prose, link labels) on a mixed page."""
    source = ("Intro [[Paris|city &amp; river]] [[Louvre]]s <span>kept</span> {{T|a=[[Seine]]}}\n"
              "== Title ==\n* item [http://x.org label] &#x41;&#66;")
    tree = mwparserfromhell.parse(source, skip_style_tags=True)
    assert plain_text(source) == (
        "Intro city & river Louvres kept \n\n Title \n\n item label AB"
    )
    assert [str(link.title) for link in tree.filter_wikilinks()] == ["Paris", "Louvre", "Seine"]
    assert parse_article(source).links == ("Paris", "Louvre", "Seine")


def _open_binary(path):
    return open(path, "rb")  # noqa: SIM115 (read_pages closes what its opener returns)


def test_real_article_plain_text(enwiki_sample):
    pages = {p.title: p for p in read_pages(DumpRange(str(enwiki_sample)), _open_binary)}
    text = plain_text(pages["Anarchism"].text)
    raw = pages["Anarchism"].text
    assert "{{" in raw and "<ref" in raw and "[[Category:" in raw
    assert "{{" not in text and "<ref" not in text and "Category:" not in text and "]]" not in text
    assert "Anarchism is a political philosophy" in text
    # an unbalanced italic mark in the article must not leave a reference in the text
    assert "ravages the rest" in text and "Infinitely Demanding by Simon Critchley" not in text
