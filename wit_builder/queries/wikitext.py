"""Wikitext to plain text with mwparserfromhell, and MediaWiki title canonicalization.

mwparserfromhell's tokenizer (its C extension) splits the wikitext into tokens; this module renders the
token stream directly, with a stack of open constructs, instead of letting mwparserfromhell build its node
tree first: building the tree costs ~10x the tokenizing and we never edit the tree. What the plain text
keeps, construct by construct (named as mwparserfromhell's node types):

- ``Text``: kept as written, newlines included (they separate paragraphs, list items and headings), minus
  the bold and italic marks (runs of two or more apostrophes). Style marks are tokenized as text
  (``skip_style_tags``): an unbalanced italic mark otherwise makes the tokenizer give up on the markup
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

Before tokenizing (``strip_tables``): comments are removed (MediaWiki strips them first; an unclosed
``<!--`` hides the rest of the page), and tables are dropped in every form MediaWiki renders one: a line whose
first non-blank, non-``:`` characters are ``{|`` (so indented ``:{| class="wikitable"`` too) or the
``{{(!}}`` template opens a table, ``|}`` / ``{{!)}}`` at a line start closes it, tables nest, and a table left
unclosed ends at the next section heading or the page end (a heading inside a table closed later stays in
it). Text after a closing ``|}`` on its line (the
``}}`` of a template the table sat in) is kept. mwparserfromhell's own table tokenizing only sees the
unindented, closed form and turns every other form into text: ``class``, ``rowspan``, colour codes.

After rendering (``_scrub``), what the tokenizer gave up on and left as text is removed, so that no token
that comes only from markup reaches the counts: tag-shaped text (``<span style="...">``, ``</div>``) of
HTML or extension tags, ``name="value"`` attribute pairs, the rest of the line after an unclosed
File/Image/Category link (``[[File:x.jpg|thumb|upright|``) or an unclosed parser function / magic-word
template (``{{#if:``, ``{{DEFAULTSORT:``), and leftover ``[[ ]] {{ }} {| |}`` brackets.

Wikitext longer than ``MAX_WIKITEXT_CHARS`` is rejected unparsed: MediaWiki refuses to save an article over
2 MiB (``$wgMaxArticleSize``), so such text is not an article, and the parser can backtrack for minutes on it.

Tokenizing the plain text is ``wit_builder.core.textnorm``'s job, not this module's.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from mwparserfromhell.parser import tokens as tk

from wit_builder.core.errors import InputError

try:  # the C tokenizer, as mwparserfromhell.parser.Parser picks it
    from mwparserfromhell.parser._tokenizer import CTokenizer as _Tokenizer
except ImportError:  # pragma: no cover (a build without the C extension)
    from mwparserfromhell.parser.tokenizer import Tokenizer as _Tokenizer

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
_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
_TABLE_OPEN = re.compile(r"[ \t:]*(?:\{\||\{\{\s*\(!\s*\}\})")
_TABLE_CLOSE = re.compile(r"[ \t:]*(?:\|\}|\{\{\s*!\)\s*\}\})")
_HEADING_LINE = re.compile(r"=+[^=\n].*=+[ \t]*$")
# HTML and MediaWiki extension tags that can show up as text when the tokenizer gives up on them.
_TAG_NAMES = (
    "a|abbr|b|bdi|bdo|big|blockquote|br|caption|center|cite|code|col|colgroup|data|dd|del|dfn|div|dl|dt|em|"
    "font|h[1-6]|hr|i|img|ins|kbd|li|mark|ol|p|pre|q|rb|rp|rt|rtc|ruby|s|samp|small|span|strike|strong|sub|"
    "sup|table|tbody|td|tfoot|th|thead|time|tr|tt|u|ul|var|wbr|nowiki|noinclude|includeonly|onlyinclude|"
    + "|".join(sorted(DROPPED_TAGS))
)
# Attributes may run over a few lines (``<div class="x"\n style="y">``); bounded, so prose is never eaten.
_STRAY_TAG = re.compile(rf"</?(?:{_TAG_NAMES})(?:\s[^<>]{{0,500}}?)?/?>", re.I)
_ATTRIBUTE = re.compile(r"\b[\w-]+[ \t]*=[ \t]*(?:\"[^\"\n]*\"|'[^'\n]*')")
_STRAY_LINK = re.compile(r"\[\[[ \t]*:?[ \t]*(?:file|image|media|category)[ \t]*:[^\n]*?(?:\]\]|$)", re.I | re.M)
_STRAY_FUNCTION = re.compile(r"\{\{[ \t]*(?:#|[A-Z]+[ \t]*:|[A-Z]{4,}[ \t]*(?:\||\}\}|$))[^\n]*", re.M)
_STRAY_BRACKETS = re.compile(r"\[\[|\]\]|\{\{+|\}\}+|\{\||\|\}")


class WikitextError(InputError):
    """The wikitext of one page could not be parsed or rendered (stage 1 skips and counts the page)."""


@dataclass(frozen=True)
class Article:
    """What stage 1 takes from one article's wikitext."""

    text: str                 # plain text, by the rules of the module docstring
    links: tuple[str, ...]    # canonical titles of its ordinary article links, each once, in first-seen order
    disambiguation: bool      # the page carries a disambiguation template


def parse_article(wikitext: str) -> Article:
    """Tokenize ``wikitext`` once and return its plain text, outgoing links and disambiguation flag.

    Links are every ordinary wikilink anywhere in the page (inside templates and references too), since an
    infobox link is still a link to the article. Raises WikitextError when mwparserfromhell rejects the text.
    """
    if len(wikitext) > MAX_WIKITEXT_CHARS:
        raise WikitextError(f"wikitext of {len(wikitext)} characters exceeds MediaWiki's 2 MiB article limit")
    try:
        tokens = _Tokenizer().tokenize(strip_tables(wikitext), 0, True)  # skip_style_tags: see the module docstring
        renderer = _Renderer()
        renderer.run(tokens)
    except Exception as err:  # the parser's own errors (ParserError, its C tokenizer's SystemError, ...)
        raise WikitextError(f"mwparserfromhell rejected the wikitext: {type(err).__name__}: {err}") from err
    text = _scrub(_BOLD_ITALIC.sub("", _MAGIC_WORD.sub("", "".join(renderer.root.parts))))
    disambiguation = any(name in DISAMBIGUATION_TEMPLATES for name in renderer.top_templates)
    return Article(text, tuple(renderer.links), disambiguation)


def strip_tables(wikitext: str) -> str:
    """``wikitext`` without comments and without its tables, by the rules of the module docstring.

    Lines are kept or dropped whole (their newlines too), so the rest of the page tokenizes as before.
    """
    if "<!--" in wikitext:
        wikitext = _COMMENT.sub("", wikitext)
    if "{|" not in wikitext and "(!" not in wikitext:
        return wikitext
    kept: list[str] = []
    depth = 0
    lines = wikitext.split("\n")
    for i, line in enumerate(lines):
        if (opened := _TABLE_OPEN.match(line)) is not None:
            depth += 1
            if _TABLE_CLOSE.search(line, opened.end()) and line.rstrip().endswith("|}"):
                depth -= 1  # a one-line table "{| ... |}"
            continue
        if depth == 0:
            kept.append(line)
        elif (close := _TABLE_CLOSE.match(line)) is not None:
            depth -= 1
            if depth == 0 and line[close.end():].strip():
                kept.append(line[close.end():])  # e.g. the "}}" of a template the table sat in
        elif _HEADING_LINE.match(line) and not _closed_later(lines, i + 1):
            depth = 0  # an unclosed table ends at the next section
            kept.append(line)
    return "\n".join(kept)


def _closed_later(lines: list[str], start: int) -> bool:
    """Is the innermost open table closed by a line from ``lines[start]`` on? A heading inside a table that
    is closed later is the table's content (MediaWiki ends a table only at ``|}``)."""
    depth = 0
    for line in lines[start:]:
        if (opened := _TABLE_OPEN.match(line)) is not None:
            if not (_TABLE_CLOSE.search(line, opened.end()) and line.rstrip().endswith("|}")):
                depth += 1  # a table opened inside (a one-line table opens and closes)
        elif _TABLE_CLOSE.match(line):
            if depth == 0:
                return True
            depth -= 1
    return False


def _scrub(text: str) -> str:
    """Remove the markup the tokenizer left as text (see the module docstring)."""
    if "<" in text:
        text = _STRAY_TAG.sub("", text)
    if "=" in text:
        text = _ATTRIBUTE.sub("", text)
    if "[[" in text:
        text = _STRAY_LINK.sub("", text)
    if "{{" in text:
        text = _STRAY_FUNCTION.sub("", text)
    return _STRAY_BRACKETS.sub("", text)


def plain_text(wikitext: str) -> str:
    """Only the plain text of ``wikitext`` (see ``parse_article``)."""
    return parse_article(wikitext).text


class _Frame:
    """One open construct: what it is, the text rendered inside it so far, and its bits of state."""

    __slots__ = ("kind", "parts", "head", "state", "markup")

    def __init__(self, kind: str, markup: str | None = None) -> None:
        self.kind = kind
        self.parts: list[str] = []
        self.head: str | None = None  # a link's target, a template's name, an entity's "&#x" prefix
        self.state = 0  # tags: _TAG_NAME -> _TAG_ATTRS -> _TAG_BODY -> _TAG_CLOSING
        self.markup = markup  # a tag's wiki markup ("{|", "*", ...), None for HTML-style tags


_TAG_NAME, _TAG_ATTRS, _TAG_BODY, _TAG_CLOSING = range(4)


class _Renderer:
    """Renders a token stream by the rules of the module docstring."""

    def __init__(self) -> None:
        self.root = _Frame("root")
        self.stack = [self.root]
        self.links: dict[str, None] = {}  # canonical link targets, first-seen order
        self.top_templates: list[str] = []  # names of the templates at the top level
        self.handlers = {
            tk.TemplateOpen: lambda t: self.push("template"),
            tk.TemplateParamSeparator: self.template_param,
            tk.TemplateParamEquals: self.template_param,
            tk.TemplateClose: self.template_close,
            tk.ArgumentOpen: lambda t: self.push("argument"),
            tk.ArgumentClose: lambda t: self.pop("argument"),
            tk.CommentStart: lambda t: self.push("comment"),
            tk.CommentEnd: lambda t: self.pop("comment"),
            tk.WikilinkOpen: lambda t: self.push("link"),
            tk.WikilinkSeparator: self.link_separator,
            tk.WikilinkClose: self.link_close,
            tk.ExternalLinkOpen: lambda t: self.push("extlink"),
            tk.ExternalLinkSeparator: self.extlink_separator,
            tk.ExternalLinkClose: self.extlink_close,
            tk.HTMLEntityStart: self.entity_start,
            tk.HTMLEntityNumeric: self.entity_numeric,
            tk.HTMLEntityHex: self.entity_hex,
            tk.HTMLEntityEnd: self.entity_end,
            tk.HeadingStart: lambda t: self.push("heading"),
            tk.HeadingEnd: self.heading_end,
            tk.TagOpenOpen: lambda t: self.stack.append(_Frame("tag", getattr(t, "wiki_markup", None))),
            tk.TagCloseOpen: self.tag_body,
            tk.TagCloseSelfclose: self.tag_selfclose,
            tk.TagOpenClose: self.tag_closing,
            tk.TagCloseClose: self.tag_close,
        }  # other tokens (attribute markers, argument separators) carry no text of their own

    def run(self, tokens: list) -> None:
        handlers, stack, text_token = self.handlers, self.stack, tk.Text
        for token in tokens:
            kind = type(token)
            if kind is text_token:  # most tokens: prose, handled inline (tokens are dicts; [] beats getattr)
                frame = stack[-1]
                if frame.kind != "tag" or frame.state == _TAG_BODY:
                    frame.parts.append(token["text"])
                elif frame.state == _TAG_NAME:
                    frame.head, frame.state = token["text"].strip().lower(), _TAG_ATTRS
                # else: attribute text and the closing tag's name are not prose
            elif (handler := handlers.get(kind)) is not None:
                handler(token)

    def push(self, kind: str) -> None:
        self.stack.append(_Frame(kind))

    def pop(self, kind: str) -> _Frame | None:
        """Close the innermost ``kind`` frame (the tokenizer nests them properly); None if none is open."""
        if len(self.stack) > 1 and self.stack[-1].kind == kind:
            return self.stack.pop()
        return None

    def emit(self, text: str) -> None:
        self.stack[-1].parts.append(text)

    def template_param(self, token) -> None:
        frame = self.stack[-1]
        if frame.kind == "template" and frame.head is None:
            frame.head = "".join(frame.parts)

    def template_close(self, token) -> None:
        frame = self.pop("template")
        if frame is not None and len(self.stack) == 1:
            name = frame.head if frame.head is not None else "".join(frame.parts)
            self.top_templates.append(name.strip().lower())

    def link_separator(self, token) -> None:
        frame = self.stack[-1]
        if frame.head is None:
            frame.head, frame.parts = "".join(frame.parts), []
        else:
            frame.parts.append("|")

    def link_close(self, token) -> None:
        frame = self.pop("link")
        if frame is None:
            return
        has_label = frame.head is not None
        target = (frame.head if frame.head is not None else "".join(frame.parts)).strip()
        if link_namespace(target) is not None:
            return  # media, category and interwiki links show no prose
        title = canonical_title(target.lstrip(":"))
        if title:
            self.links[title] = None
        self.emit("".join(frame.parts) if has_label else target.lstrip(":"))

    def extlink_separator(self, token) -> None:
        frame = self.stack[-1]
        if frame.kind == "extlink" and frame.head is None:
            frame.head, frame.parts = "".join(frame.parts), []

    def extlink_close(self, token) -> None:
        frame = self.pop("extlink")
        if frame is not None and frame.head is not None:
            self.emit("".join(frame.parts))  # the label; a bare URL has none and shows nothing

    def entity_start(self, token) -> None:
        self.push("entity")
        self.stack[-1].head = "&"

    def entity_numeric(self, token) -> None:
        self._extend_entity("#")

    def entity_hex(self, token) -> None:
        self._extend_entity(getattr(token, "char", "x"))

    def _extend_entity(self, text: str) -> None:
        """Add to the open entity's "&#x" prefix (the tokenizer sends these right after HTMLEntityStart)."""
        frame = self.stack[-1]
        if frame.head is None:
            raise WikitextError(f"an HTML entity token outside an entity (in a {frame.kind})")
        frame.head += text

    def entity_end(self, token) -> None:
        frame = self.pop("entity")
        if frame is not None:
            self.emit(html.unescape(f"{frame.head}{''.join(frame.parts)};"))

    def heading_end(self, token) -> None:
        frame = self.pop("heading")
        if frame is not None:
            self.emit(f"\n{''.join(frame.parts)}\n")

    def tag_body(self, token) -> None:
        frame = self.stack[-1]
        if frame.kind == "tag":
            frame.state, frame.parts = _TAG_BODY, []

    def tag_closing(self, token) -> None:
        frame = self.stack[-1]
        if frame.kind == "tag":
            frame.state = _TAG_CLOSING

    def tag_selfclose(self, token) -> None:
        frame = self.pop("tag")
        if frame is not None:
            self.finish_tag(frame, None)

    def tag_close(self, token) -> None:
        frame = self.pop("tag")
        if frame is not None:
            self.finish_tag(frame, "".join(frame.parts))

    def finish_tag(self, frame: _Frame, body: str | None) -> None:
        name = frame.head or ""
        if name in DROPPED_TAGS:
            return
        if name in _LINE_BREAK_TAGS:
            self.emit("\n")
        elif name in ("li", "dt", "dd") and frame.markup:
            return  # list markup ("*", "#", ";", ":") precedes the item's text, which follows as Text
        elif body:
            self.emit(body)


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
