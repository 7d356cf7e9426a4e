"""robots.txt per RFC 9309 and X-Robots-Tag opt-outs on their own (wit_builder.download.robots); test_fetch
checks them end to end."""

from __future__ import annotations

import pytest

from wit_builder.download.fetch import USER_AGENT_TOKEN
from wit_builder.download.robots import DEFAULT_OPT_OUTS, MAX_ROBOTS_BYTES, RobotsRules, x_robots_opt_out


def test_x_robots_tag_parsing():
    def check(*values):
        return x_robots_opt_out(values, "wit-builder", DEFAULT_OPT_OUTS)

    assert check("noai") == "noai" and check("nofollow, NoImageIndex") == "noimageindex"
    assert check("wit-builder: noindex") == "noindex" and check("otherbot: noai") is None
    assert check("noarchive", "nofollow") is None and check("unavailable_after: 25 Jun 2010 15:00:00 PST") is None


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
