"""The rule for one (url, caption) pair, the same for every format: resolve the URL against the page (WAT and
WARC links; tables have no page), normalize it, clean the caption; a :class:`Candidate` or the reason why not.

``urljoin`` returns exactly what ``urllib.parse.urljoin`` returns, with the base URL split once per page
(cached) and the common image references (``/a.jpg``, ``b/c.jpg?x=1``, ``//cdn/x.png``, ``?q``) joined by
string operations; anything else goes to urllib. Resolving relative image URLs was the largest cost of
reading a WAT file (5 us of urllib per link).
"""

from __future__ import annotations

import re
import urllib.parse
from functools import lru_cache
from typing import NamedTuple

from wit_builder.core.uid import clean_caption, normalize_url
from wit_builder.pairs.readers.layouts import PoolOptions
from wit_builder.pairs.readers.records import Candidate, Rejection

# ---- urljoin ----

# A base URL whose urllib split is plain: http(s), a netloc of ordinary characters, a path without ";"
# (urlparse would split params off it), a query; no fragment, whitespace, control character or backslash
# (urlsplit strips or removes those), ASCII only (urlsplit normalizes non-ASCII netlocs).
_PLAIN_BASE = re.compile(
    r"((?i:https?))://([A-Za-z0-9._~%!$&'()*+,=@:-]+)(/[!\"$-:<->@-\[\]-~]*)?(?:\?([!\"$-\[\]-~]*))?\Z"
)
# A reference joined without urllib: no scheme (no ":" at all), no fragment, params, whitespace, control
# characters, backslash or non-ASCII; an optional query.
_PLAIN_REF = re.compile(r"([!\"$-9<->@-\[\]-~]*)(?:\?([!\"$-\[\]-~]*))?\Z")


class _Base(NamedTuple):
    origin: str  # "scheme://netloc", scheme lower-cased as urlsplit does
    path: str  # the base path ("" when the URL has none)
    query: str  # "" when none or empty
    directory: str  # the path up to and including its last "/" ("" when the path is empty)
    simple_directory: bool  # the directory holds no "//" (urljoin would collapse it) and no dot segment


@lru_cache(maxsize=256)
def _split_base(base: str) -> _Base | None:
    found = _PLAIN_BASE.match(base)
    if found is None:
        return None
    scheme, netloc, path, query = found.groups()
    path = path or ""
    directory = path[: path.rfind("/") + 1]
    simple = "//" not in directory and "/." not in directory
    return _Base(f"{scheme.lower()}://{netloc}", path, query or "", directory, simple)


def urljoin(base: str, url: str) -> str:
    """``urllib.parse.urljoin(base, url)``, the same string for every input, fast for plain http(s) pages."""
    if not base or not url:
        return base or url
    parts = _split_base(base)
    ref = _PLAIN_REF.match(url) if parts is not None else None
    if parts is None or ref is None:
        return urllib.parse.urljoin(base, url)
    path, query = ref.groups()
    if path.startswith("//"):
        netloc = path[2:].split("/", 1)[0]
        if not netloc or "[" in netloc or "]" in netloc:
            return urllib.parse.urljoin(base, url)  # an empty netloc (urljoin keeps the base's) or IPv6
        result = parts.origin.split(":", 1)[0] + ":" + path
        return f"{result}?{query}" if query else result
    if not path:  # "?q" or "?": the base document with another (or, when empty, its own) query
        query = query or parts.query
        return f"{parts.origin}{parts.path}?{query}" if query else parts.origin + parts.path
    if path[0] == "/":
        if "/." in path:
            path = _remove_dot_segments(path.split("/"))
    elif parts.simple_directory and "//" not in path and "/." not in "/" + path:
        path = (parts.directory or "/") + path
    else:
        base_parts = parts.path.split("/")
        if base_parts[-1] != "":
            del base_parts[-1]
        segments = base_parts + path.split("/")
        segments[1:-1] = filter(None, segments[1:-1])  # as urljoin: no redundant slashes on re-joining
        path = _remove_dot_segments(segments)
    if path[0] != "/":
        path = "/" + path  # urlunsplit puts the slash between netloc and a relative-looking path
    return f"{parts.origin}{path}?{query}" if query else parts.origin + path


def _remove_dot_segments(segments: list[str]) -> str:
    """urljoin's resolution of "." and ".." (RFC 3986 5.2.4 as CPython writes it)."""
    resolved: list[str] = []
    for segment in segments:
        if segment == "..":
            if resolved:
                resolved.pop()
        elif segment != ".":
            resolved.append(segment)
    if segments[-1] in (".", ".."):
        resolved.append("")
    return "/".join(resolved) or "/"


# ---- one pair ----

# An absolute http(s) URL that normalize_url leaves as it is (but for a "/" after a bare host): lower-case
# scheme and host of plain labels, no userinfo, port or fragment, and none of the characters urllib strips
# or splits on (whitespace, control characters, backslash, "#").
_PLAIN_URL = re.compile(r"(https?://[a-z0-9_-]+(?:\.[a-z0-9_-]+)*)([/?][^#\\\x00-\x20\x7f]*)?\Z")


_SURROGATE = re.compile("[\ud800-\udfff]")  # code points of UTF-16 surrogates: never in text UTF-8 can hold


def clean_pair(
    raw_url: object, raw_caption: object, base: str | None, max_url_length: int
) -> tuple[str, str] | str:
    """(url, caption) ready to match, or the reason (a FILTER_/BAD_REASONS entry) the pair is unusable."""
    if not isinstance(raw_caption, str) or not raw_caption.strip():
        return "empty_caption"
    if not isinstance(raw_url, str) or not raw_url.strip():
        return "missing_url"
    url = raw_url.strip()
    if len(url) > max_url_length:
        return "url_too_long"
    if _SURROGATE.search(raw_caption) or _SURROGATE.search(url):
        return "non_utf8"  # a lone surrogate escape ("\ud800" in JSON) is valid JSON but no text: it cannot be written
    if url[:5].lower() == "data:":
        return "data_uri"
    plain = _PLAIN_URL.match(url)
    if base and plain is None:  # an absolute plain URL resolves to itself: no urljoin
        try:
            url = urljoin(base, url)
        except ValueError:
            return "invalid_url"
        plain = _PLAIN_URL.match(url)
    if plain is not None:
        # Already in normalize_url's form (lower-case scheme and host, no port, userinfo or fragment): skip
        # urllib's split and join, the costliest step of a record. Only "/" may be missing after the host.
        rest = plain.group(2)
        if rest is None:
            url += "/"
        elif rest[0] == "?":
            url = plain.group(1) + "/" + rest
    else:
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme not in ("http", "https"):
            return "non_http_url"
        try:
            url = normalize_url(url)
        except ValueError:
            return "invalid_url"
    if len(url) > max_url_length:
        return "url_too_long"
    caption = clean_caption(raw_caption)
    return (url, caption) if caption else "empty_caption"


def judge(raw_url: object, raw_caption: object, base: str | None, options: PoolOptions, path: str, record: int,
          page_url: str | None = None) -> Candidate | Rejection:
    """:func:`clean_pair` of one record (``record`` of the file at ``path``) as a Candidate or a Rejection; a
    URL over the limit is reported with its length."""
    cleaned = clean_pair(raw_url, raw_caption, base, options.max_url_length)
    if isinstance(cleaned, str):
        detail = f"{len(raw_url)} chars" if cleaned == "url_too_long" and isinstance(raw_url, str) else ""
        if cleaned == "non_utf8":
            detail = "a lone surrogate escape (such as \\ud800) in the url or caption: not encodable text"
        return Rejection(cleaned, path, record, detail)
    return Candidate(cleaned[0], cleaned[1], path, record, page_url, str(raw_caption))
