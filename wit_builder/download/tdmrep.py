"""TDMRep, the W3C TDM Reservation Protocol (Community Group Final Report): the text-and-data-mining opt-out
of the EU DSM Directive's Article 4, machine-readable, honoured by default (``--no-tdmrep`` turns it off).

Two of its three techniques apply to images (the third is a ``<meta>`` in HTML pages):

- the ``tdm-reservation`` response header (``1``: TDM rights reserved; ``0``: not reserved; anything else is a
  protocol error, read as unset), with an optional ``tdm-policy`` URL (:func:`header_reservation`);
- the origin's ``/.well-known/tdmrep.json`` (:class:`TdmRules`): a JSON array of rules
  ``{"location": pattern, "tdm-reservation": 0|1, "tdm-policy": url}``. A location is a path pattern with
  robots.txt's ``*`` and ``$`` (the spec reuses that wording and points to Google's robots.txt matching, so
  protego matches it, case-sensitive, percent-encoding normalized); "the most specific match is the first in
  sequence": the first rule whose location matches decides; no match means unset. A file that cannot be
  fetched (4xx, 5xx, network failure, deadline) or is not a JSON array means the origin does not implement
  the protocol: unset everywhere.

The file is fetched once per origin with robots.txt's cache, deadline and byte bound (``robots.OriginCache``,
at most ``MAX_TDMREP_BYTES``) before the origin's first image. The spec lets a header ``tdm-reservation: 0``
supersede the file; we never request a resource the file reserves, so a reservation in the file stands.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import webencodings
from protego import Protego

from wit_builder.download.robots import OriginCache, origin

TDMREP_PATH = "/.well-known/tdmrep.json"
MAX_TDMREP_BYTES = 500 * 1024  # bytes; a longer file is not a JSON array we can read: unset
TDM_HEADER, POLICY_HEADER = "tdm-reservation", "tdm-policy"

# What a tdmrep.json fetch returned: (http status or None on a network failure, body bytes).
TdmFetch = Callable[[str], tuple[int | None, bytes]]


def reservation_value(value: object) -> int | None:
    """1 or 0 from a ``tdm-reservation`` value (the integer, or its text as a header carries it); None (unset)
    for anything else, which the spec calls a protocol error."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value in (0, 1) else None
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    return None


def header_reservation(values: Iterable[str]) -> int | None:
    """The reservation the ``tdm-reservation`` header lines declare: 1 when any line says 1, else 0 when one says
    0, else None (absent or unreadable)."""
    found = {reservation_value(v) for v in values}
    return 1 if 1 in found else 0 if 0 in found else None


@dataclass(frozen=True)
class TdmRule:
    """One rule of a tdmrep.json: its location pattern, reservation (None: unset) and policy URL."""

    location: str
    reservation: int | None
    policy: str | None
    matcher: Protego  # robots.txt matching of ``location``: a Disallow rule that "disallows" exactly its matches

    def matches(self, url: str) -> bool:
        """Whether ``location`` matches the path (and query) of ``url``."""
        return not self.matcher.can_fetch(url, "tdm")


class TdmRules:
    """One origin's tdmrep.json: ``rules`` in file order (empty when it was not fetched or not readable) and
    ``fetched`` ("ok", or why there are no rules)."""

    def __init__(self, status: int | None, body: bytes) -> None:
        self.rules: list[TdmRule] = []
        if status is None or not 200 <= status < 300:
            self.fetched = "unreachable" if status is None else f"answered HTTP {status}"
            return
        self.fetched = "ok"
        try:
            doc = json.loads(webencodings.decode(body, "utf-8", errors="strict")[0])
        except (ValueError, UnicodeDecodeError):
            self.fetched = "not JSON"
            return
        if not isinstance(doc, list):
            self.fetched = "not a JSON array"
            return
        for item in doc:
            rule = _rule(item)
            if rule is not None:
                self.rules.append(rule)

    def reservation(self, url: str) -> tuple[int | None, str | None]:
        """(reservation, policy) of the first rule whose location matches ``url``; (None, None) when none does."""
        for rule in self.rules:
            if rule.matches(url):
                return rule.reservation, rule.policy
        return None, None


def _rule(item: object) -> TdmRule | None:
    """A rule from one array item, or None when it has no usable ``location`` (the spec makes it mandatory)."""
    if not isinstance(item, dict):
        return None
    location = item.get("location")
    if not isinstance(location, str) or not location.strip():
        return None
    # One robots.txt line: a newline could not be part of a path, and '#' would start a comment there.
    location = location.strip().replace("#", "%23")
    if "\n" in location or "\r" in location:
        return None
    policy = item.get(POLICY_HEADER)
    return TdmRule(location, reservation_value(item.get(TDM_HEADER)), policy if isinstance(policy, str) else None,
                   Protego.parse(f"User-agent: *\nDisallow: {location}\n"))


class TdmCache:
    """``refusal(url)`` per the url's origin tdmrep.json; one fetch per origin even under many threads."""

    def __init__(self, fetch: TdmFetch, wait_s: float | None = None) -> None:
        self.wait_s = wait_s
        self._cache: OriginCache[TdmRules] = OriginCache(lambda key: TdmRules(*fetch(key + TDMREP_PATH)), wait_s)

    def refusal(self, url: str) -> tuple[str, str] | None:
        """(reason, message) when the origin's tdmrep.json reserves TDM rights on ``url`` (``tdm_reserved``) or
        is still being fetched by another thread after ``wait_s`` (``tdm_unknown``); None otherwise."""
        key = origin(url)
        rules = self._cache.get(key)
        if rules is None:
            return "tdm_unknown", (f"tdmrep.json of {key} still being fetched after {self.wait_s}s, so {url} is "
                                   "not fetched")
        reservation, policy = rules.reservation(url)
        if reservation == 1:
            policy_note = f" (policy {policy})" if policy else ""
            return "tdm_reserved", f"tdmrep.json reserves TDM rights on {url}{policy_note}"
        return None
