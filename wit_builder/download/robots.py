"""robots.txt per RFC 9309, fetched once per origin and cached, and the ``X-Robots-Tag`` opt-outs.

Rules are parsed by protego (Scrapy's maintained RFC 9309 parser): ``*`` and ``$`` wildcards, the longest
matching rule wins, Allow wins a tie, the group is chosen by our product token (case-insensitive, else ``*``).
At most ``MAX_ROBOTS_BYTES`` (RFC 9309 2.5: at least 500 KiB must be parsed) are read; rules beyond are ignored.

Fetch outcomes follow RFC 9309 2.3.1: 2xx -> parse the rules; 4xx -> no rules (everything allowed); 5xx or a
network failure (a timeout included) -> treat the origin as fully disallowed.

A thread that needs an origin's rules while another thread fetches them waits at most ``wait_s`` (the caller
passes the per-URL deadline): the fetch itself is bounded by that deadline, so a trickling robots.txt delays
the rows of its host by at most one deadline, then they are refused as "robots.txt unreachable".
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from protego import Protego

# What a robots.txt fetch returned: (http status or None on a network failure, body bytes).
RobotsFetch = Callable[[str], tuple[int | None, bytes]]

# img2dataset's default ``--disallowed_header_directives`` (noai/noimageai: DeviantArt's 2022 proposal).
DEFAULT_OPT_OUTS: frozenset[str] = frozenset({"noai", "noimageai", "noindex", "noimageindex"})
MAX_ROBOTS_BYTES = 500 * 1024  # bytes


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, host lower-cased: the unit a robots.txt governs (RFC 9309 2.3)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.lower()}"


class RobotsRules:
    """One origin's parsed robots.txt and how its fetch went ("ok", or why the origin counts as disallowed)."""

    def __init__(self, status: int | None, body: bytes) -> None:
        self.allow_all = self.disallow_all = False
        self.parser: Protego | None = None
        self.fetched = "ok"
        if status is not None and 200 <= status < 300:
            self.parser = Protego.parse(parse_limit(body))
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


def parse_limit(body: bytes) -> str:
    """The text parsed from a robots.txt body: its first MAX_ROBOTS_BYTES, cut at the last whole line."""
    if len(body) > MAX_ROBOTS_BYTES:
        body = body[:MAX_ROBOTS_BYTES]
        cut = max(body.rfind(b"\n"), body.rfind(b"\r"))
        body = body[: cut + 1] if cut >= 0 else b""
    return body.decode("utf-8", errors="replace")


class RobotsCache:
    """``refusal(url)`` per the url's origin robots.txt; one fetch per origin even under many threads."""

    def __init__(self, fetch: RobotsFetch, user_agent_token: str, wait_s: float | None = None) -> None:
        self._fetch = fetch
        self.user_agent_token = user_agent_token
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._origin_locks: dict[str, threading.Lock] = {}
        self._rules: dict[str, RobotsRules] = {}

    def refusal(self, url: str) -> str | None:
        """Why robots.txt forbids ``url`` (disallowed, or unreachable), or None when it may be fetched."""
        key = origin(url)
        rules = self._get(key)
        if rules is None:
            return f"robots.txt of {key} still being fetched after {self.wait_s}s, so {url} is not fetched"
        if rules.allows(url, self.user_agent_token):
            return None
        return f"robots.txt disallows {url}" if rules.fetched == "ok" else (
            f"robots.txt {rules.fetched}, so {url} is disallowed")

    def _get(self, key: str) -> RobotsRules | None:
        with self._lock:
            entry = self._rules.get(key)
            if entry is not None:
                return entry
            origin_lock = self._origin_locks.setdefault(key, threading.Lock())
        # Other threads for the same origin wait for this one fetch, but never longer than their own deadline.
        if not origin_lock.acquire(timeout=-1 if self.wait_s is None else self.wait_s):
            with self._lock:
                return self._rules.get(key)
        try:
            with self._lock:
                entry = self._rules.get(key)
            if entry is None:
                entry = RobotsRules(*self._fetch(key + "/robots.txt"))
                with self._lock:
                    self._rules[key] = entry
        finally:
            origin_lock.release()
        return entry


def x_robots_opt_out(values: Iterable[str], user_agent_token: str, directives: frozenset[str]) -> str | None:
    """The first opted-out directive among ``X-Robots-Tag`` header values that apply to us, or None.

    A value is ``"noai, noimageai"`` (applies to every crawler) or ``"somebot: noai"`` (only to that one), as in
    Google's X-Robots-Tag syntax; matching is case-insensitive.
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
