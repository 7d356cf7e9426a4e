"""Wikitext to plain text with mwparserfromhell, and MediaWiki title canonicalization.

What the plain text keeps, node by node (mwparserfromhell's node types):

- ``Text``: kept as written, newlines included (they separate paragraphs, list items and headings), minus
  the bold and italic marks (runs of two or more apostrophes). Style marks are parsed as text
  (``skip_style_tags=True``): an unbalanced italic mark otherwise makes the parser give up on the markup
  that follows and leave whole ``<ref>...</ref>`` blocks in the text.
- ``Wikilink`` ``[[Target|label]]``: the label (rendered by these same rules) or, without one, the target as
  written (``[[Paris]]`` -> "Paris", ``[[bus]]es`` -> "buses" because the trail is ordinary text). Dropped
  entirely: links into the File/Image/Media namespaces (images and their captions), Category links, and
  interwiki / interlanguage links (a known site prefix such as ``fr:`` or ``wikt:``) — none of them is prose
  of the article.
- ``ExternalLink``: the label of ``[http://x label]``; bare URLs are dropped.
- ``Heading``: its title, on its own line.
- ``Tag``: the contents of formatting and layout tags are kept (``<b>``, ``<i>``, ``<small>``, ``<span>``,
  ``<div>``, ``<blockquote>``, ``<poem>``, ``<nowiki>``, list and definition markup); ``<br>`` becomes a
  newline. Dropped with their contents: references (``<ref>``, ``<references>``), tables (``{| ... |}`` and
  ``<table>``), galleries, math/chemistry/score/timeline/code blocks, maps, ``<includeonly>`` and
  ``<templatestyles>`` (see ``DROPPED_TAGS``).
- ``HTMLEntity``: decoded (``&amp;`` -> "&", ``&nbsp;`` -> no-break space).
- ``Template``, ``Argument`` (``{{{1}}}``), ``Comment``: dropped. Templates are not expanded, so text
  that only a template would produce (infobox values, ``{{convert}}`` numbers) is not in the plain text.
- Magic words such as ``__NOTOC__`` are removed.

Wikitext longer than ``MAX_WIKITEXT_CHARS`` is rejected unparsed: MediaWiki refuses to save an article over
2 MiB (``$wgMaxArticleSize``), so such text is not an article, and the parser can backtrack for minutes on it.

Tokenizing the plain text is ``wit_builder.textnorm``'s job, not this module's.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import mwparserfromhell
from mwparserfromhell.nodes import (
    Argument,
    Comment,
    ExternalLink,
    Heading,
    HTMLEntity,
    Node,
    Tag,
    Template,
    Text,
    Wikilink,
)
from mwparserfromhell.wikicode import Wikicode

# Namespaces whose links show no article prose (English names and the canonical aliases).
MEDIA_NAMESPACES = frozenset({"file", "image", "media"})
CATEGORY_NAMESPACES = frozenset({"category"})
# Interwiki / interlanguage prefixes: sister projects and every language prefix of two or three letters
# (plus the few longer language codes), matched case-insensitively on the part before the first colon.
INTERWIKI_PREFIXES = frozenset(
    {
        "wikt", "wiktionary", "w", "wikipedia", "q", "wikiquote", "s", "wikisource", "b", "wikibooks",
        "n", "wikinews", "v", "wikiversity", "voy", "wikivoyage", "c", "commons", "d", "wikidata",
        "m", "meta", "metawikimedia", "mw", "species", "wikispecies", "wmf", "foundation", "phab",
        "simple", "incubator", "outreach", "mediawikiwiki", "oldwikisource", "translatewiki",
        "als", "bat-smg", "be-x-old", "cbk-zam", "fiu-vro", "map-bms", "nds-nl", "roa-rup", "roa-tara",
        "zh-classical", "zh-min-nan", "zh-yue",
    }
)
_LANGUAGE_PREFIX = re.compile(r"^[a-z]{2,3}(?:-[a-z]{2,8})?$")
# Tags dropped together with their contents.
DROPPED_TAGS = frozenset(
    {
        "ref", "references", "table", "gallery", "math", "chem", "ce", "score", "timeline", "imagemap",
        "syntaxhighlight", "source", "graph", "mapframe", "maplink", "templatedata", "templatestyles",
        "includeonly", "hiero", "categorytree", "inputbox", "section", "indicator",
    }
)
_LINE_BREAK_TAGS = frozenset({"br"})
# Templates that mark a disambiguation page (its title names no single thing).
DISAMBIGUATION_TEMPLATES = frozenset(
    {"disambiguation", "disambig", "dab", "disamb", "hndis", "geodis", "set index article", "letter-numbercombdisambig"}
)
MAX_WIKITEXT_CHARS = 2 * 1024 * 1024
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_BOLD_ITALIC = re.compile(r"'{2,}")


class WikitextError(ValueError):
    """The wikitext could not be parsed or rendered."""


@dataclass(frozen=True)
class Article:
    """What stage 1 takes from one article's wikitext."""

    text: str                 # plain text, by the rules of the module docstring
    links: tuple[str, ...]    # canonical titles of its ordinary article links, each once, in first-seen order
    disambiguation: bool      # the page carries a disambiguation template


def parse_article(wikitext: str) -> Article:
    """Parse ``wikitext`` once and return its plain text, outgoing links and disambiguation flag.

    Links are every ordinary wikilink anywhere in the page (inside templates and references too), since an
    infobox link is still a link to the article. Raises WikitextError when mwparserfromhell rejects the text
    (or its tree is too deep to render).
    """
    if len(wikitext) > MAX_WIKITEXT_CHARS:
        raise WikitextError(f"wikitext of {len(wikitext)} characters exceeds MediaWiki's 2 MiB article limit")
    try:
        code = mwparserfromhell.parse(wikitext, skip_style_tags=True)
        parts: list[str] = []
        _render(code, parts)
        links = dict.fromkeys(link_targets(code))
        disambiguation = any(
            str(t.name).strip().lower() in DISAMBIGUATION_TEMPLATES for t in code.filter_templates(recursive=False)
        )
    except RecursionError as err:
        raise WikitextError("wikitext nests too deeply to render") from err
    except Exception as err:  # the parser's own errors (ParserError, its C tokenizer's SystemError, ...)
        raise WikitextError(f"mwparserfromhell rejected the wikitext: {type(err).__name__}: {err}") from err
    return Article(_MAGIC_WORD.sub("", "".join(parts)), tuple(links), disambiguation)


def plain_text(wikitext: str) -> str:
    """Only the plain text of ``wikitext`` (see ``parse_article``)."""
    return parse_article(wikitext).text


def _render(code: Wikicode, out: list[str]) -> None:
    for node in code.nodes:
        _render_node(node, out)


def _render_node(node: Node, out: list[str]) -> None:
    if isinstance(node, Text):
        out.append(_BOLD_ITALIC.sub("", node.value))
    elif isinstance(node, Wikilink):
        _render_wikilink(node, out)
    elif isinstance(node, ExternalLink):
        if node.title is not None:
            _render(node.title, out)
    elif isinstance(node, Heading):
        out.append("\n")
        _render(node.title, out)
        out.append("\n")
    elif isinstance(node, Tag):
        _render_tag(node, out)
    elif isinstance(node, HTMLEntity):
        out.append(html.unescape(str(node)))
    elif isinstance(node, (Template, Argument, Comment)):
        return
    # Any other node type (none exist in mwparserfromhell 0.7) contributes nothing.


def _render_wikilink(link: Wikilink, out: list[str]) -> None:
    target = str(link.title).strip()
    if link_namespace(target) is not None:
        return
    if link.text is not None:
        _render(link.text, out)
    else:
        out.append(target.lstrip(":"))


def _render_tag(tag: Tag, out: list[str]) -> None:
    name = str(tag.tag).strip().lower()
    if name in DROPPED_TAGS:
        return
    if name in _LINE_BREAK_TAGS:
        out.append("\n")
        return
    if name in ("li", "dt", "dd") and tag.wiki_markup:
        return  # list markup ("*", "#", ";", ":") precedes the item's text, which follows as Text nodes
    if tag.contents is not None:
        _render(tag.contents, out)


def link_namespace(target: str) -> str | None:
    """Why a link shows no prose: "media", "category" or "interwiki"; None for an ordinary article link.

    A leading colon (``[[:Category:X]]``) makes a visible link to the page, so it counts as ordinary.
    """
    if target.startswith(":") or ":" not in target:
        return None
    prefix = target.split(":", 1)[0].strip().lower()
    if prefix in MEDIA_NAMESPACES:
        return "media"
    if prefix in CATEGORY_NAMESPACES:
        return "category"
    if prefix in INTERWIKI_PREFIXES or _LANGUAGE_PREFIX.match(prefix):
        return "interwiki"
    return None


def link_targets(wikitext_code: Wikicode) -> list[str]:
    """Canonical titles of the ordinary article links in parsed wikitext (see ``canonical_title``)."""
    targets = []
    for link in wikitext_code.filter_wikilinks(recursive=True):
        target = str(link.title).strip()
        if link_namespace(target) is None:
            title = canonical_title(target.lstrip(":"))
            if title:
                targets.append(title)
    return targets


def canonical_title(title: str) -> str:
    """MediaWiki's canonical form of a page title as used for lookups.

    Underscores become spaces, runs of spaces collapse, HTML entities decode, the ``#fragment`` is dropped,
    and the first letter is upper-cased (English Wikipedia's ``first-letter`` case rule).
    """
    title = html.unescape(title).split("#", 1)[0].replace("_", " ")
    title = " ".join(title.split())
    return title[:1].upper() + title[1:]


_DISAMBIGUATOR = re.compile(r"\s*\([^()]*\)\s*$")


def title_phrase(title: str) -> str:
    """The phrase a title names: the title without a trailing disambiguator ("Mercury (planet)" -> "Mercury")."""
    return _DISAMBIGUATOR.sub("", title).strip() or title
