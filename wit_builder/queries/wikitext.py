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
from collections.abc import Mapping
from dataclasses import dataclass, field

from mwparserfromhell.parser import tokens as tk

from wit_builder.core import languages
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
_STRAY_FUNCTION = re.compile(r"\{\{[ \t]*(?:#|[A-Z]+[ \t]*:|[A-Z]{4,}[ \t]*(?:\||\}\}|$))[^\n]*", re.M)
_STRAY_BRACKETS = re.compile(r"\[\[|\]\]|\{\{+|\}\}+|\{\||\|\}")


@dataclass(frozen=True)
class Site:
    """What a wiki's language changes in reading its wikitext (``site_rules``): the local names and aliases of
    the File/Media and Category namespaces, the behaviour switches (``__NOTOC__``, ``__目次非表示__``), the
    language-converter variant kept, and the regexes built from them. ``ENGLISH`` is English Wikipedia's."""

    lang: str
    media: frozenset[str]             # casefolded prefixes of File (6) and Media (-2) links
    category: frozenset[str]          # casefolded prefixes of Category (14) links
    switches: frozenset[str] = frozenset()  # localized ``__X__`` behaviour switches, as written
    variants: tuple[str, ...] = ()    # converter variants in order of preference (zh: zh-hans first)
    stray_link: re.Pattern = field(init=False, repr=False, compare=False)
    gallery_line: re.Pattern = field(init=False, repr=False, compare=False)
    magic_word: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prefixes = "|".join(re.escape(p) for p in sorted(self.media | self.category, key=len, reverse=True))
        media = "|".join(re.escape(p) for p in sorted(self.media, key=len, reverse=True))
        set_ = object.__setattr__  # a frozen dataclass's derived fields
        set_(self, "stray_link", re.compile(rf"\[\[[ \t]*:?[ \t]*(?:{prefixes})[ \t]*:[^\n]*?(?:\]\]|$)",
                                            re.I | re.M))
        # a gallery line whose tag the tokenizer gave up on: "File:x.jpg|caption" at a line start
        set_(self, "gallery_line", re.compile(rf"^[ \t]*(?:{media})[ \t]*:[^\n]*$", re.I | re.M))
        words = "|".join(re.escape(w.strip("_")) for w in sorted(self.switches, key=len, reverse=True) if w.strip("_"))
        set_(self, "magic_word", re.compile(rf"__(?:[A-Z]+{'|' + words if words else ''})__", re.I))


class WikitextError(InputError):
    """The wikitext of one page could not be parsed or rendered (stage 1 skips and counts the page)."""


@dataclass(frozen=True)
class Article:
    """What stage 1 takes from one article's wikitext."""

    text: str                 # plain text, by the rules of the module docstring
    links: tuple[str, ...]    # canonical titles of its ordinary article links, each once, in first-seen order
    disambiguation: bool      # the page carries a disambiguation template


def parse_article(wikitext: str, site: Site | None = None) -> Article:
    """Tokenize ``wikitext`` once and return its plain text, outgoing links and disambiguation flag, reading
    links and magic words by ``site``'s language (``ENGLISH`` when None).

    Links are every ordinary wikilink anywhere in the page (inside templates and references too), since an
    infobox link is still a link to the article. Raises WikitextError when mwparserfromhell rejects the text.
    """
    if len(wikitext) > MAX_WIKITEXT_CHARS:
        raise WikitextError(f"wikitext of {len(wikitext)} characters exceeds MediaWiki's 2 MiB article limit")
    try:
        site = site or ENGLISH
        source = strip_tables(wikitext)
        if "-{" in source:
            source = resolve_converter(source, site.variants)
        tokens = _Tokenizer().tokenize(source, 0, True)  # skip_style_tags: see the module docstring
        renderer = _Renderer(site)
        renderer.run(tokens)
    except Exception as err:  # the parser's own errors (ParserError, its C tokenizer's SystemError, ...)
        raise WikitextError(f"mwparserfromhell rejected the wikitext: {type(err).__name__}: {err}") from err
    text = _scrub(_BOLD_ITALIC.sub("", site.magic_word.sub("", "".join(renderer.root.parts))), site)
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


def _scrub(text: str, site: Site) -> str:
    """Remove the markup the tokenizer left as text (see the module docstring)."""
    if "<" in text:
        text = _STRAY_TAG.sub("", text)
    if "=" in text:
        text = _ATTRIBUTE.sub("", text)
    if "[[" in text:
        text = site.stray_link.sub("", text)
    if ":" in text:
        text = site.gallery_line.sub("", text)
    if "{{" in text:
        text = _STRAY_FUNCTION.sub("", text)
    return _STRAY_BRACKETS.sub("", text)


def plain_text(wikitext: str, site: Site | None = None) -> str:
    """Only the plain text of ``wikitext`` (see ``parse_article``)."""
    return parse_article(wikitext, site).text


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

    def __init__(self, site: Site) -> None:
        self.site = site
        self.after_template = False  # the last token closed a template: text "|x=y}}" may be its tail
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
                text = token["text"]
                if self.after_template or frame.kind == "orphan":
                    text = self.orphan_text(text)
                    frame = stack[-1]
                if frame.kind != "tag" or frame.state == _TAG_BODY:
                    frame.parts.append(text)
                elif frame.state == _TAG_NAME:
                    frame.head, frame.state = token["text"].strip().lower(), _TAG_ATTRS
                # else: attribute text and the closing tag's name are not prose
            elif (handler := handlers.get(kind)) is not None:
                self.after_template = False
                handler(token)
        while self.stack[-1].kind == "orphan":  # never closed: it was prose after all
            orphan = self.stack.pop()
            self.emit("".join(orphan.parts))

    def orphan_text(self, text: str) -> str:
        """A template the tokenizer closed early (``{{a|x={{B}, {C}}|y=1}}``: it takes the first ``}}`` as the
        close) leaves its other parameters as text, ``|y=1}}``. MediaWiki's preprocessor pairs the braces and
        reads them as the template's. Text that starts with ``|`` right after a template's close is held in an
        "orphan" frame up to the ``}}`` that closes it (dropped with it); a blank line first ends the hold and
        the held text is kept as prose."""
        if self.stack[-1].kind != "orphan":  # right after a template's close
            self.after_template = False
            if not text.startswith("|"):
                return text
            self.push("orphan")
        self.after_template = False
        depth = self.stack[-1].state  # the orphan's open "{{" count
        for m in _BRACES.finditer(text):
            if m.group() == "\n\n":
                orphan = self.stack.pop()
                self.emit("".join(orphan.parts))
                return text
            if m.group() == "{{":
                depth += 1
            elif depth:
                depth -= 1
            else:
                self.stack.pop()  # the orphan's parameters end here, dropped
                return text[m.end():]
        self.stack[-1].state = depth
        self.stack[-1].parts.append(text)
        return ""

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
        self.after_template = frame is not None
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
        if link_namespace(target, self.site) is not None:
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


def link_namespace(target: str, site: Site | None = None) -> str | None:
    """Why a link shows no prose: "media", "category" or "interwiki"; None for an ordinary article link.
    Namespace names are ``site``'s (its language's names and aliases, English's too; ``ENGLISH`` when None).

    A leading colon (``[[:Category:X]]``) makes a visible link to the page, so it counts as ordinary.
    """
    if target.startswith(":") or ":" not in target:
        return None
    site = site or ENGLISH
    prefix = " ".join(target.split(":", 1)[0].replace("_", " ").split()).casefold()
    if prefix in site.media:
        return "media"
    if prefix in site.category:
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


_BRACES = re.compile(r"\{\{|\}\}|\n\n")
ENGLISH = Site("en", MEDIA_NAMESPACES, CATEGORY_NAMESPACES)


def site_rules(lang: languages.Language, namespaces: Mapping[int, str] | None = None) -> Site:
    """The :class:`Site` of a wiki in ``lang``: namespace names and aliases of MediaWiki's message files for the
    language and its fallbacks (English's included: every wiki accepts the canonical names), plus the local
    names the dump's own ``<siteinfo>`` lists (``namespaces``, number -> name); the localized behaviour switches;
    for Chinese, the converter variant zh-hans first (``resolve_converter``)."""
    local = {number: " ".join(name.replace("_", " ").split()).casefold() for number, name in (namespaces or {}).items()}
    media = set(MEDIA_NAMESPACES)
    category = set(CATEGORY_NAMESPACES)
    for number in (languages.FILE_NS, languages.MEDIA_NS):
        media |= languages.namespace_names(lang, number)
        if number in local:
            media.add(local[number])
    category |= languages.namespace_names(lang, languages.CATEGORY_NS)
    if languages.CATEGORY_NS in local:
        category.add(local[languages.CATEGORY_NS])
    switches = frozenset(w for word_id in languages.SWITCHES
                         for w in languages.magic_words(lang, word_id) if w.startswith("__") and w.endswith("__"))
    variants = ZH_VARIANTS if lang.mediawiki_code in ("zh", "wuu", "gan") else ()
    return Site(lang.code, frozenset(media), frozenset(category), switches, variants)


# Chinese variants in the order stage 1 keeps them: simplified first (the Chinese segmenter's dictionary is
# simplified Chinese), then the traditional ones; MediaWiki's LanguageConverter fallbacks, one list.
ZH_VARIANTS = ("zh-hans", "zh-cn", "zh-sg", "zh-my", "zh", "zh-hant", "zh-tw", "zh-hk", "zh-mo")
_CONVERTER = re.compile(r"-\{(?P<body>(?:(?!\}-|-\{).){0,2000}?)\}-", re.S)
_FLAGS = re.compile(r"^\s*(?P<flags>[A-Za-z\-;\s]{1,40}?)\s*\|(?!\|)")
_VARIANT = re.compile(r"(?:^|;)\s*(?P<code>[a-z]{2,3}(?:-[a-z]{2,8})*)\s*:")


def resolve_converter(text: str, variants: tuple[str, ...] = ZH_VARIANTS) -> str:
    """Language-converter markup (MediaWiki's ``LanguageConverter``) resolved to one variant's text.

    ``-{text}-`` and ``-{R|text}-`` -> ``text`` (shown as written); ``-{zh-hans:A; zh-hant:B}-`` and
    ``-{A|zh-hans:A; zh-hant:B}-`` -> the first of ``variants`` the rule names (else the first variant written);
    ``-{H|...}-`` (a rule for the whole page, shown nowhere), ``-{-|...}-`` (a rule removed), ``-{T|...}-``
    (the page title's) and ``-{D|...}-`` (a description of the rule) -> nothing. Nested markup is resolved from
    the inside out. No variant code or flag is ever left in the text.
    """
    for _ in range(8):  # nesting depth; each pass resolves the innermost
        new = _CONVERTER.sub(lambda m: _convert(m["body"], variants), text)
        if new == text:
            break
        text = new
    return text


def _convert(body: str, variants: tuple[str, ...]) -> str:
    flags = ""
    if (m := _FLAGS.match(body)) is not None and not _VARIANT.match(body):
        flags, body = m["flags"].replace(" ", "").upper(), body[m.end():]
    letters = set(flags.split(";")) | set(flags)
    if letters & {"H", "-", "T", "D"}:
        return ""
    if "R" in letters:
        return body
    spans = list(_VARIANT.finditer(body))
    if not spans:
        return body
    texts: dict[str, str] = {}
    for i, span in enumerate(spans):
        end = spans[i + 1].start() if i + 1 < len(spans) else len(body)
        value = body[span.end():end]
        if "=>" in value:  # a one-way rule "from=>variant:to": the "to" text
            value = value.split("=>")[-1].split(":", 1)[-1]
        texts.setdefault(span["code"], value.strip().rstrip(";").strip())
    chosen = next((texts[v] for v in variants if v in texts), next(iter(texts.values())))
    return chosen
