"""robots.txt per RFC 9309, fetched once per origin and cached, and the ``X-Robots-Tag`` opt-outs.

Rules are parsed by protego (Scrapy's maintained RFC 9309 parser): ``*`` and ``$`` wildcards, the longest
matching rule wins, Allow wins a tie, the group is chosen by our product token (case-insensitive, else ``*``),
field names case-insensitive, any spacing around the colon, CRLF, CR or LF line ends, comments anywhere.

Bytes to text (:func:`robots_text`): RFC 9309 2.3 says the file is UTF-8; real servers also send a byte-order
mark (UTF-8, or UTF-16 LE/BE: the whole file is then UTF-16) and Latin-1 bytes. A BOM is honoured and dropped
(``webencodings``, the WHATWG Encoding Standard's BOM sniffing), anything else is UTF-8 with each invalid byte
as U+FFFD, which protego percent-encodes the same way in a rule and in a URL, so ``Disallow: /caf\\xe9/`` still
matches ``/caf%E9/``. At most ``MAX_ROBOTS_BYTES`` (RFC 9309 2.5: at least 500 KiB must be parsed) are read; a
longer file is cut at its last whole line and the rules beyond are ignored.

Fetch outcomes follow RFC 9309 2.3.1: 2xx -> parse the rules; 4xx -> no rules (everything allowed); 5xx or a
network failure (a timeout, more than five redirects, a redirect to another scheme included) -> treat the
origin as fully disallowed.

A thread that needs an origin's rules while another thread fetches them waits at most ``wait_s`` (the caller
passes the per-URL deadline): the fetch itself is bounded by that deadline, so a trickling robots.txt delays
the rows of its host by at most one deadline, then they are refused as "robots.txt unreachable".
:class:`OriginCache` is that per-origin, fetch-once cache; ``tdmrep`` uses it for ``/.well-known/tdmrep.json``.

``X-Robots-Tag`` (:func:`x_robots_opt_out`) is read as Google and Bing document it: any number of header lines,
each a comma-separated list of rules, a rule optionally scoped to one crawler (``googlebot: noindex``) and the
scope holding for the rules after it on that line (``googlebot: noindex, wit-builder: noimageai`` applies
``noimageai`` to us), names case-insensitive. Which rules block us: ``BLOCKING_DIRECTIVES``; the others are
about search results and links and are ignored (``KNOWN_DIRECTIVES``).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar
from urllib.parse import urlsplit

import webencodings
from protego import Protego

# What a robots.txt fetch returned: (http status or None on a network failure, body bytes).
RobotsFetch = Callable[[str], tuple[int | None, bytes]]

# The X-Robots-Tag rules that keep an image out of the dataset. noindex and its shorthand none (= noindex,
# nofollow), and noimageindex (Google, Bing): the owner does not want the resource indexed; noai, noimageai
# (DeviantArt's 2022 proposal, img2dataset's default --disallowed_header_directives): no AI training.
# "unavailable_after: <date>" in the past also blocks (Google then treats the resource as noindex).
BLOCKING_DIRECTIVES: frozenset[str] = frozenset({"noindex", "none", "noimageindex", "noai", "noimageai"})
DEFAULT_OPT_OUTS = BLOCKING_DIRECTIVES
# Rules that carry a value after a colon (Google): "max-snippet: 20" is not a crawler scope named max-snippet.
VALUED_DIRECTIVES: frozenset[str] = frozenset({"unavailable_after", "max-snippet", "max-image-preview",
                                               "max-video-preview"})
# Documented rules that do not block us (search snippets, caches, translation, links).
KNOWN_DIRECTIVES: frozenset[str] = BLOCKING_DIRECTIVES | VALUED_DIRECTIVES | frozenset({
    "all", "nofollow", "noarchive", "nocache", "nosnippet", "notranslate", "indexifembedded", "noodp", "noydir"})
MAX_ROBOTS_BYTES = 500 * 1024  # bytes
_CRAWLER = re.compile(r"[a-z0-9_*][a-z0-9_.*/-]*")  # a crawler name before "name: rules"


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, host lower-cased: the unit a robots.txt governs (RFC 9309 2.3)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.lower()}"


def robots_text(body: bytes) -> str:
    """The text parsed from a robots.txt body (see the module docstring): its first MAX_ROBOTS_BYTES, a BOM
    (UTF-8 or UTF-16) honoured and removed, else UTF-8 with invalid bytes as U+FFFD; a body over the limit is cut
    at its last whole line."""
    truncated = len(body) > MAX_ROBOTS_BYTES
    text, _ = webencodings.decode(body[:MAX_ROBOTS_BYTES], "utf-8", errors="replace")
    if truncated:
        cut = max(text.rfind("\n"), text.rfind("\r"))
        text = text[: cut + 1] if cut >= 0 else ""
    return text


class RobotsRules:
    """One origin's parsed robots.txt and how its fetch went ("ok", or why the origin counts as disallowed)."""

    def __init__(self, status: int | None, body: bytes) -> None:
        self.allow_all = self.disallow_all = False
        self.parser: Protego | None = None
        self.fetched = "ok"
        if status is not None and 200 <= status < 300:
            self.parser = Protego.parse(robots_text(body))
        elif status is not None and 400 <= status < 500:
            self.allow_all = True
        else:
            self.disallow_all = True
            self.fetched = "unreachable" if status is None else f"answered HTTP {status}"

    def allows(self, url: str, user_agent_token: str) -> bool:
        """Whether the rules let ``user_agent_token`` fetch ``url`` (a path of this origin)."""
        if self.parser is None:
            return self.allow_all
        return self.parser.can_fetch(url, user_agent_token)


T = TypeVar("T")


class OriginCache(Generic[T]):
    """``get(origin)``: ``load(origin)`` run once per origin however many threads ask; a thread that finds another
    loading it waits at most ``wait_s`` (None: for ever) and gets None if the load is still running."""

    def __init__(self, load: Callable[[str], T], wait_s: float | None = None) -> None:
        self._load = load
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._origin_locks: dict[str, threading.Lock] = {}
        self._values: dict[str, T] = {}

    def get(self, key: str) -> T | None:
        """The loaded value of origin ``key``, or None when another thread is still loading it after ``wait_s``."""
        with self._lock:
            if key in self._values:
                return self._values[key]
            origin_lock = self._origin_locks.setdefault(key, threading.Lock())
        # Other threads for the same origin wait for this one fetch, but never longer than their own deadline.
        if not origin_lock.acquire(timeout=-1 if self.wait_s is None else self.wait_s):
            with self._lock:
                return self._values.get(key)
        try:
            with self._lock:
                if key in self._values:
                    return self._values[key]
            value = self._load(key)
            with self._lock:
                self._values[key] = value
            return value
        finally:
            origin_lock.release()


class RobotsCache:
    """``refusal(url)`` per the url's origin robots.txt; one fetch per origin even under many threads."""

    def __init__(self, fetch: RobotsFetch, user_agent_token: str, wait_s: float | None = None) -> None:
        self.user_agent_token = user_agent_token
        self.wait_s = wait_s
        self._cache: OriginCache[RobotsRules] = OriginCache(
            lambda key: RobotsRules(*fetch(key + "/robots.txt")), wait_s)

    def refusal(self, url: str) -> tuple[str, str] | None:
        """(reason, message) when robots.txt forbids ``url``: reason ``robots_txt`` (its rules disallow it) or
        ``robots_txt_unreachable`` (5xx, network failure, still being fetched); None when it may be fetched."""
        key = origin(url)
        rules = self._cache.get(key)
        if rules is None:
            return ("robots_txt_unreachable",
                    f"robots.txt of {key} still being fetched after {self.wait_s}s, so {url} is not fetched")
        if rules.allows(url, self.user_agent_token):
            return None
        if rules.fetched == "ok":
            return "robots_txt", f"robots.txt disallows {url}"
        return "robots_txt_unreachable", f"robots.txt {rules.fetched}, so {url} is disallowed"


def x_robots_rules(value: str, user_agent_token: str) -> Iterator[tuple[str, str | None]]:
    """(rule name lower-cased, its value or None) of one ``X-Robots-Tag`` header line that apply to
    ``user_agent_token``: unscoped rules, and rules after a ``name:`` scope naming it (case-insensitive) or ``*``."""
    token = user_agent_token.lower()
    scope: str | None = None  # None: every crawler
    items = value.split(",")
    i = 0
    while i < len(items):
        item = items[i].strip()
        i += 1
        name, sep, rest = item.partition(":")
        key = name.strip().lower()
        if sep and key not in KNOWN_DIRECTIVES and _CRAWLER.fullmatch(key):  # "somebot: rule"
            scope = key
            name, sep, rest = rest.strip().partition(":")
            key = name.strip().lower()
        if not key or scope not in (None, token, "*"):  # "*: noai" is not documented, but means everyone
            continue
        rest = rest.strip()
        if key == "unavailable_after" and _when(rest) is None and i < len(items):
            # An RFC 850 / RFC 822 date has a comma of its own ("Wednesday, 03-Nov-2027 15:00:00 PST").
            joined = f"{rest},{items[i]}".strip()
            if _when(joined) is not None:
                rest, i = joined, i + 1
        yield key, rest if sep else None


def x_robots_opt_out(values: Iterable[str], user_agent_token: str, directives: frozenset[str] = DEFAULT_OPT_OUTS,
                     now: float | None = None) -> str | None:
    """The first blocking rule among ``X-Robots-Tag`` header lines ``values`` that applies to us (see the module
    docstring), or None: a name in ``directives``, or ``unavailable_after`` when its date has passed (``now``:
    Unix time, default the clock; an unreadable date is ignored)."""
    for value in values:
        for key, argument in x_robots_rules(value, user_agent_token):
            if key in directives:
                return key
            if key == "unavailable_after" and argument:
                when = _when(argument)
                if when is not None and when <= (time.time() if now is None else now):
                    return key
    return None


def _when(text: str) -> float | None:
    """Unix time of a date Google accepts in ``unavailable_after`` (RFC 822/850, ISO 8601; no zone: UTC)."""
    text = text.strip()
    if not text:
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()
