"""robots.txt per RFC 9309 and X-Robots-Tag opt-outs on their own (wit_builder.download.robots); test_fetch
checks them end to end."""

from __future__ import annotations

import codecs

import pytest

from wit_builder.download.fetch import USER_AGENT_TOKEN
from wit_builder.download.robots import (
    BLOCKING_DIRECTIVES,
    DEFAULT_OPT_OUTS,
    MAX_ROBOTS_BYTES,
    RobotsRules,
    robots_text,
    x_robots_opt_out,
)


def _x_robots(*values: str) -> str | None:
    return x_robots_opt_out(values, USER_AGENT_TOKEN, DEFAULT_OPT_OUTS, now=NOW)


NOW = 1_780_000_000.0  # 2026-05-28, a fixed clock for unavailable_after


def test_x_robots_tag_parsing():
    assert _x_robots("noai") == "noai" and _x_robots("nofollow, NoImageIndex") == "noimageindex"
    assert _x_robots("wit-builder: noindex") == "noindex" and _x_robots("otherbot: noai") is None
    assert _x_robots("noarchive", "nofollow") is None
    assert _x_robots("unavailable_after: 25 Jun 2099 15:00:00 PST") is None  # not yet


@pytest.mark.parametrize("values, blocked", [
    # the two cases: the shorthand none (= noindex, nofollow), and several scopes in one line
    (["none"], "none"), (["NONE"], "none"), (["googlebot: noindex, wit-builder: noimageai"], "noimageai"),
    # a scope holds for the rules after it, until the next scope (Google's X-Robots-Tag syntax)
    (["wit-builder: nofollow, noai"], "noai"), (["wit-builder: nofollow, googlebot: noai"], None),
    (["googlebot: noindex, nofollow", "WIT-Builder: NoImageAI"], "noimageai"),  # several lines, any case
    (["googlebot: noindex", "bingbot: none"], None), (["otherbot: none, noai"], None),
    (["  noindex  "], "noindex"), (["all"], None), (["max-image-preview: none, nosnippet"], None),
    (["max-snippet: 0, noimageindex"], "noimageindex"), (["wit-builder:noindex"], "noindex"),
    # unavailable_after in the past means noindex (Google); RFC 822 with a weekday's comma, RFC 850, ISO 8601
    (["unavailable_after: 25 Jun 2010 15:00:00 PST"], "unavailable_after"),
    (["unavailable_after: Fri, 25 Jun 2010 15:00:00 PST, nofollow"], "unavailable_after"),
    (["unavailable_after: Wednesday, 03-Nov-2010 15:00:00 GMT"], "unavailable_after"),
    (["unavailable_after: 2010-06-25T15:00:00+00:00"], "unavailable_after"),
    (["unavailable_after: 2099-06-25"], None), (["unavailable_after: not a date"], None),
    (["googlebot: unavailable_after: 25 Jun 2010 15:00:00 PST"], None),
    ([""], None), ([",,,"], None), ([":"], None), (["*: noai"], "noai"),
])
def test_x_robots_tag_every_documented_form(values, blocked):
    assert _x_robots(*values) == blocked


def test_blocking_directives_are_the_documented_set():
    assert {"noindex", "none", "noimageindex", "noai", "noimageai"} == BLOCKING_DIRECTIVES
    assert not {"nofollow", "noarchive", "nosnippet", "notranslate", "all"} & BLOCKING_DIRECTIVES


# ---- robots.txt per RFC 9309 (issue 13) ----

def _rules(text: str) -> RobotsRules:
    return RobotsRules(200, text.encode())


RFC_9309_EXAMPLE = """\
User-Agent: *
Disallow: *.gif$
Disallow: /example/
Allow: /publications/

User-Agent: foobot
Disallow:/
Allow:/example/page.html
Allow:/example/allowed.gif

User-Agent: barbot
User-Agent: bazbot
Disallow: /example/page.html

User-Agent: quxbot

EOF
"""


@pytest.mark.parametrize("agent, path, allowed", [
    # RFC 9309 section 5.1, "Simple Example"
    ("foobot", "/example/page.html", True), ("foobot", "/example/allowed.gif", True),
    ("foobot", "/example/other.html", False), ("foobot", "/", False),
    ("barbot", "/example/page.html", False), ("bazbot", "/example/page.html", False),
    ("barbot", "/example/other.html", True), ("BAZBOT", "/example/page.html", False),
    ("quxbot", "/example/page.html", True), ("quxbot", "/anything.gif", True),
    ("otherbot", "/example/page.html", False), ("otherbot", "/publications/a.html", True),
    ("otherbot", "/img/a.gif", False), ("otherbot", "/img/a.gif?x=1", True),
])
def test_robots_rfc_9309_simple_example(agent, path, allowed):
    assert _rules(RFC_9309_EXAMPLE).allows("http://example.com" + path, agent) is allowed


def test_robots_rfc_9309_longest_match_and_allow_wins_ties():
    # RFC 9309 section 5.2, "Longest Match"
    rules = _rules("User-Agent: foobot\nAllow: /example/page/\nDisallow: /example/page/disallowed.gif\n")
    assert rules.allows("http://example.com/example/page/a.gif", "foobot")
    assert not rules.allows("http://example.com/example/page/disallowed.gif", "foobot")
    # the cases: a more specific Allow beats a shorter Disallow; wildcards and $ anchor
    rules = _rules("User-agent: *\nDisallow: /img/\nAllow: /img/public/\nDisallow: /*.jpg$\n")
    assert rules.allows("http://s/img/public/a.png", USER_AGENT_TOKEN)
    assert not rules.allows("http://s/img/private/a.png", USER_AGENT_TOKEN)
    assert not rules.allows("http://s/photos/a.jpg", USER_AGENT_TOKEN)
    assert rules.allows("http://s/photos/a.jpg?size=2", USER_AGENT_TOKEN)  # $ anchors the end
    assert rules.allows("http://s/photos/a.jpeg", USER_AGENT_TOKEN)
    # equivalent Allow and Disallow: Allow wins (RFC 9309 2.2.2)
    assert _rules("User-agent: *\nDisallow: /a\nAllow: /a\n").allows("http://s/a/b.jpg", USER_AGENT_TOKEN)


def test_robots_group_is_chosen_by_our_token_not_the_star_group():
    text = f"User-agent: *\nDisallow: /\n\nUser-agent: {USER_AGENT_TOKEN}\nDisallow: /private/\n"
    assert _rules(text).allows("http://s/a.jpg", USER_AGENT_TOKEN)
    assert not _rules(text).allows("http://s/private/a.jpg", USER_AGENT_TOKEN)
    assert not _rules(text).allows("http://s/a.jpg", "otherbot")


def test_robots_rules_beyond_500_kib_are_ignored():
    filler = "# " + "x" * 97 + "\n"
    head = "User-agent: *\nDisallow: /early/\n" + filler * (MAX_ROBOTS_BYTES // len(filler))
    text = head + "Disallow: /late/\n"
    assert len(text.encode()) > MAX_ROBOTS_BYTES
    rules = _rules(text)
    assert not rules.allows("http://s/early/a.jpg", USER_AGENT_TOKEN)
    assert rules.allows("http://s/late/a.jpg", USER_AGENT_TOKEN)


# ---- robots.txt bytes as real servers send them (issue 23) ----

DISALLOW_ALL = "User-agent: *\nDisallow: /\n"


@pytest.mark.parametrize("body", [
    codecs.BOM_UTF8 + DISALLOW_ALL.encode(),  # the case: a UTF-8 BOM hid the group
    codecs.BOM_UTF16_LE + DISALLOW_ALL.encode("utf-16-le"),
    codecs.BOM_UTF16_BE + DISALLOW_ALL.encode("utf-16-be"),
    DISALLOW_ALL.replace("\n", "\r\n").encode(),  # CRLF
    DISALLOW_ALL.replace("\n", "\r").encode(),  # old Mac CR
    DISALLOW_ALL.rstrip("\n").encode(),  # no newline at the end
    b"\n\n# a comment first\n\n   \n" + DISALLOW_ALL.encode(),  # leading blank and comment lines
    b"USER-AGENT : *\n\tDISALLOW:/\n",  # field names in upper case, odd spacing and tabs
    b"user-agent:*\ndisallow :   /   # everything\n",
    codecs.BOM_UTF8 + b"User-agent: WIT-BUILDER\r\nDisallow: /\r\n\r\nUser-agent: *\r\nAllow: /\r\n",
])
def test_robots_in_every_shape_real_servers_send_disallow_all(body):
    rules = RobotsRules(200, body)
    assert not rules.allows("http://s/img/a.jpg", USER_AGENT_TOKEN)
    assert not rules.allows("http://s/", USER_AGENT_TOKEN)


def test_robots_latin1_bytes_keep_every_other_rule_and_match_the_same_bytes_in_a_url():
    # Latin-1 is not UTF-8 (RFC 9309 2.3): the invalid byte becomes U+FFFD, which protego normalizes the same way
    # in the rule and in a URL carrying that byte percent-encoded.
    rules = RobotsRules(200, b"User-agent: *\nDisallow: /caf\xe9/\nDisallow: /private/\n")
    assert not rules.allows("http://s/caf%E9/a.jpg", USER_AGENT_TOKEN)
    assert not rules.allows("http://s/private/a.jpg", USER_AGENT_TOKEN)
    assert rules.allows("http://s/cafe/a.jpg", USER_AGENT_TOKEN)


def test_robots_text_decoding_and_the_500_kib_cut():
    assert robots_text(codecs.BOM_UTF8 + b"a\n") == "a\n"
    assert robots_text(codecs.BOM_UTF16_LE + "Ä\n".encode("utf-16-le")) == "Ä\n"
    # UTF-16 over the limit: cut at its last whole line, never inside a character
    line = "Disallow: /x/\n"
    body = codecs.BOM_UTF16_LE + ("User-agent: *\n" + line * (MAX_ROBOTS_BYTES // 20)).encode("utf-16-le")
    assert len(body) > MAX_ROBOTS_BYTES
    text = robots_text(body)
    assert text.endswith(line) and "\ufffd" not in text
    assert len(text.encode("utf-16-le")) <= MAX_ROBOTS_BYTES
    # one line longer than the limit holds no whole line: nothing is parsed
    assert robots_text(b"x" * (MAX_ROBOTS_BYTES + 1)) == ""
