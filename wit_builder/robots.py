"""robots.txt, fetched once per origin and cached (urllib.robotparser), and the ``X-Robots-Tag`` opt-outs.

Fetch outcomes follow RFC 9309: 2xx -> parse the rules; 4xx -> no rules (everything allowed); 5xx or a
network failure -> treat the origin as fully disallowed (the site may be overloaded, or hiding its rules).
"""

from __future__ import annotations

import threading
import urllib.robotparser
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

# What a robots.txt fetch returned: (http status or None on a network failure, body text).
RobotsFetch = Callable[[str], tuple[int | None, str]]

DEFAULT_OPT_OUTS: frozenset[str] = frozenset({"noai", "noimageai", "noindex", "noimageindex"})


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.lower()}"


class RobotsCache:
    """``refusal(url)`` per the url's origin robots.txt; one fetch per origin even under many threads."""

    def __init__(self, fetch: RobotsFetch, user_agent_token: str) -> None:
        self._fetch = fetch
        self.user_agent_token = user_agent_token
        self._lock = threading.Lock()
        self._origin_locks: dict[str, threading.Lock] = {}
        self._parsers: dict[str, tuple[urllib.robotparser.RobotFileParser, str]] = {}

    def refusal(self, url: str) -> str | None:
        """Why robots.txt forbids ``url`` (disallowed, or unreachable), or None when it may be fetched."""
        parser, fetched = self._parser(origin(url))
        if parser.can_fetch(self.user_agent_token, url):
            return None
        return f"robots.txt disallows {url}" if fetched == "ok" else f"robots.txt {fetched}, so {url} is disallowed"

    def _parser(self, key: str) -> tuple[urllib.robotparser.RobotFileParser, str]:
        with self._lock:
            entry = self._parsers.get(key)
            if entry is not None:
                return entry
            origin_lock = self._origin_locks.setdefault(key, threading.Lock())
        with origin_lock:  # other threads for the same origin wait for this one fetch
            with self._lock:
                entry = self._parsers.get(key)
            if entry is None:
                entry = _parse(*self._fetch(key + "/robots.txt"))
                with self._lock:
                    self._parsers[key] = entry
        return entry


def _parse(status: int | None, text: str) -> tuple[urllib.robotparser.RobotFileParser, str]:
    """The parser and how the fetch went ("ok" or why the origin counts as fully disallowed)."""
    parser = urllib.robotparser.RobotFileParser()
    if status is not None and 200 <= status < 300:
        parser.parse(text.splitlines())
    elif status is not None and 400 <= status < 500:
        parser.allow_all = True
    else:
        parser.disallow_all = True
        return parser, "unreachable" if status is None else f"answered HTTP {status}"
    return parser, "ok"


def x_robots_opt_out(values: Iterable[str], user_agent_token: str, directives: frozenset[str]) -> str | None:
    """The first opted-out directive among ``X-Robots-Tag`` header values that apply to us, or None.

    A value is ``"noai, noimageai"`` (applies to every crawler) or ``"somebot: noai"`` (only to that one).
    """
    token = user_agent_token.lower()
    for value in values:
        scope, sep, rest = value.partition(":")
        scope = scope.strip().lower()
        # "bot: noai" names a crawler; "noindex, unavailable_after: <date>" does not.
        scoped = bool(sep) and scope.replace("-", "").replace("_", "").isalnum() and scope not in directives
        if scoped and scope not in (token, "*") and scope != "unavailable_after":
            continue
        listed = rest if scoped and scope != "unavailable_after" else value
        for directive in listed.split(","):
            name = directive.strip().lower()
            if name in directives:
                return name
    return None
