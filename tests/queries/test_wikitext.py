"""Wikitext -> plain text: what is kept, what is dropped, and what is rejected."""

from __future__ import annotations

import mwparserfromhell
import pytest

from wit_builder.core.textnorm import tokenize
from wit_builder.queries import wikitext
from wit_builder.queries.wikidump import DumpRange, read_pages
from wit_builder.queries.wikitext import (
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


# ---- tables in every form, and no markup-only token in the text (issue 10) ----

# Words that only markup produces: attributes, CSS, table/file options, parser functions, magic words.
MARKUP_ONLY = frozenset({
    "wikitable", "sortable", "colspan", "rowspan", "cellpadding", "cellspacing", "bgcolor", "valign", "nowrap",
    "thumb", "thumbnail", "upright", "frameless", "px", "200px", "notoc", "nogallery", "defaultsort", "ifeq",
    "expr", "ifexist", "plainlist", "mw", "collapsible", "autocollapse", "ffffff", "ffcc00", "efefef", "f2f2f2",
})
# Words that are also English; they may appear, but never as an attribute (class="...", style=...).
MARKUP_ALSO_ENGLISH = ("class", "style", "align", "width", "border", "background", "color", "left", "right")


@pytest.mark.parametrize("wikitext", [
    'Before\n{| class="wikitable"\n|+ Cap\n! colspan=2 | head\n|-\n| style="background:#FFCC00" | cell\n|}\nAfter',
    'Before\n:{| class="wikitable sortable"\n! a !! b\n|-\n| rowspan=2 | x || y\n|}\nAfter',
    'Before\n  :::{| class="wikitable"\n|-\n| cell\n|}\nAfter',
    'Before\n{{(!}} class="wikitable"\n{{!}} colspan=2 {{!}} cell\n{{!-}}\n'
    '{{!}} bgcolor=#efefef {{!}} c2\n{{!)}}\nAfter',
    'Before\n{| class="outer"\n| outer cell\n{| class="inner" cellpadding=3\n| inner cell\n|}\n'
    '| outer again\n|}\nAfter',
    'Before\n{| class="wikitable"\n| valign=top | cell never closed\n|-\n| more\n== After ==\n',
    'Before\n{| style="border:1px solid" | one-line |}\nAfter',
    'Before {{Some box|\n{| class="wikitable"\n| cell\n|}}}\nAfter',
    'Before\n<table class="wikitable"><tr><td style="width:5em">cell</td></tr></table>\nAfter',
])
def test_every_table_form_is_dropped(wikitext):
    tokens = tokenize(plain_text(wikitext))
    assert tokens == ["before", "after"], tokens


def test_unclosed_table_ends_at_the_next_section():
    text = plain_text('Intro\n:{| class="wikitable"\n| cell\n== History ==\nThe prose of the section.')
    assert tokenize(text) == ["intro", "history", "the", "prose", "of", "the", "section"]


def test_heading_inside_a_closed_table_stays_in_the_table():
    # A heading line inside a table that is closed later is the table's content (MediaWiki closes tables only
    # at "|}"), so the cells after it are dropped with the table; only an unclosed table ends at a heading.
    text = plain_text('Before\n{| class="wikitable"\n|\n== Cell heading ==\n| style="color:red" | cell\n|}\nAfter')
    assert tokenize(text) == ["before", "after"]
    nested = 'A\n{| class="o"\n|\n{| class="i"\n| x\n|}\n=== H ===\n| y\n|}\nB\n{| class="u"\n| z\n== S ==\nC'
    assert tokenize(plain_text(nested)) == ["a", "b", "s", "c"]


def test_unclosed_table_ends_at_the_page_end():
    text = plain_text('Before\n{| class="wikitable"\n| cell never closed\n|-\n| style="color:red" | x\n')
    assert tokenize(text) == ["before"]


def test_comments_are_removed_before_tables():
    assert tokenize(plain_text("a<!-- {|\n| x\n-->b\n<!-- unclosed\n{| c")) == ["ab"]


@pytest.mark.parametrize("wikitext", [
    'Prose <span style="color:#FF0000; font-size:90%">red</span> text',  # closed tag: attributes dropped
    'Prose <div class="thumb tright" style="width:200px">text',  # unclosed tag the tokenizer gives up on
    'Prose [[File:Map.png|thumb|upright=1.2|left|200px|alt=x|A map [[of]] {{x',  # unclosed file link
    "Prose {{#if:{{{1|}}}|yes|no}} {{#ifeq:a|b|c}} text",
    "Prose __NOTOC__ __NOEDITSECTION__ {{DEFAULTSORT:Foo, Bar}} text",
    'Prose {{DEFAULTSORT:Foo, Bar',  # unclosed magic word
    '<gallery mode="packed" heights=200px>\nFile:A.jpg|thumb\n</gallery>Prose text',
    'Prose\n<div class="thumb tright"\n style="width:220px">text',  # unclosed tag, attributes over two lines
    'Prose <span\n style="color:red"\n>text',
])
def test_no_markup_token_in_text(wikitext):
    tokens = set(tokenize(plain_text(wikitext)))
    assert "prose" in tokens
    assert not tokens & MARKUP_ONLY, tokens & MARKUP_ONLY
    markup = {"style", "class", "color", "font", "size", "width", "left", "alt", "tright", "div", "span"}
    assert not tokens & markup, tokens


def _markup_findings(text: str) -> list[str]:
    import re

    attribute = re.compile(r"\b(?:" + "|".join(MARKUP_ALSO_ENGLISH) + r")\s*=", re.I)
    colour = re.compile(r"#[0-9A-Fa-f]{6}\b")
    brackets = [b for b in ("{|", "|}", "[[", "]]", "{{", "}}") if b in text]
    return attribute.findall(text) + colour.findall(text) + brackets


def test_real_pages_most_frequent_tokens_are_prose(enwiki_sample):
    """Over every article of the real gensim enwiki sample: none of the markup vocabulary is in the text, and no
    attribute (``class=``), colour code or wiki bracket is left, while the raw wikitext has plenty of them."""
    from collections import Counter

    counts: Counter[str] = Counter()
    raw_findings = findings = 0
    for page in read_pages(DumpRange(str(enwiki_sample)), _open_binary):
        if page.ns != 0 or page.redirect is not None:
            continue
        text = plain_text(page.text)
        counts.update(tokenize(text))
        raw_findings += len(_markup_findings(page.text))
        found = _markup_findings(text)
        assert not found, (page.title, found[:5])
        findings += len(found)
    assert raw_findings > 1000  # the sample does carry the markup
    top = [token for token, _ in counts.most_common(5000)]
    assert not set(top) & MARKUP_ONLY, set(top) & MARKUP_ONLY
    # "thumb", "upright", "sortable", "mw" (megawatt) are also prose words of these articles ("rule of thumb")
    never = MARKUP_ONLY - {"thumb", "thumbnail", "upright", "sortable", "mw", "collapsible"}
    assert not set(counts) & never, set(counts) & never
    assert top[:3] == ["the", "of", "and"]


# Real wikitext (MediaWiki pages quoted in public repositories), reduced to the table parts.
REAL_INDENTED_TABLES = [
    # Rosetta Code, "Compiler/lexical analyzer" (GFDL 1.3): a table indented with ":::"
    ";Operators\n\n:::{| class=\"wikitable\"\n|-\n!  Name          !!  Common name         !!  Character sequence\n"
    "|-\n|  <tt>Op_multiply</tt>     ||  multiply              ||  <tt>*</tt>\n|-\n"
    "|  <tt>Op_divide</tt>       ||  divide                ||  <tt>/</tt>\n|}\n\nThe operators follow.",
    # ArchWiki, "Arch package guidelines" (GFDL 1.3): a table indented with ":"
    "* Package files should follow these general directory guidelines:\n\n:{| class=\"wikitable\"\n|-\n|\n"
    "| System-essential configuration files\n|-\n|\n| Binaries\n|-\n|\n| Libraries\n|}\nThe guidelines end here.",
]


@pytest.mark.parametrize("wikitext", REAL_INDENTED_TABLES)
def test_real_indented_tables_are_dropped(wikitext):
    tokens = tokenize(plain_text(wikitext))
    assert "wikitable" not in tokens and "class" not in tokens
    assert "binaries" not in tokens and "multiply" not in tokens
    assert tokens[-3:] in (["the", "operators", "follow"], ["guidelines", "end", "here"])
