"""TDMRep (W3C TDM Reservation Protocol, Community Group Final Report) on its own (wit_builder.download.tdmrep):
the tdmrep.json rules, the header; test_optouts checks them end to end against a loopback server."""

from __future__ import annotations

import codecs
import json
import threading

import pytest

from wit_builder.download.tdmrep import TdmCache, TdmRules, header_reservation, reservation_value

# The spec's second example (section "TDM File on the Origin Server", Examples).
SPEC_EXAMPLE = [
    {"location": "/directory-a/", "tdm-reservation": 1},
    {"location": "/directory-b/html/", "tdm-reservation": 1, "tdm-policy": "https://provider.com/policies/policy.json"},
    {"location": "/directory-b/images/*.jpg", "tdm-reservation": 0},
]


def rules(doc: object, status: int = 200) -> TdmRules:
    return TdmRules(status, json.dumps(doc).encode())


@pytest.mark.parametrize("path, expected", [
    ("/directory-a/report.pdf", (1, None)),
    ("/directory-a/", (1, None)),
    ("/directory-b/html/page.html", (1, "https://provider.com/policies/policy.json")),
    ("/directory-b/images/photo.jpg", (0, None)),
    ("/directory-b/images/photo.png", (None, None)),  # no rule matches: unset
    ("/Directory-A/report.pdf", (None, None)),  # matching is case-sensitive
    ("/elsewhere/a.jpg", (None, None)),
])
def test_spec_example(path, expected):
    assert rules(SPEC_EXAMPLE).reservation("https://provider.com" + path) == expected


def test_the_first_matching_rule_decides_and_patterns_are_robots_txt_patterns():
    doc = [{"location": "/img/public/*", "tdm-reservation": 0}, {"location": "/img/", "tdm-reservation": 1},
           {"location": "/*.png$", "tdm-reservation": 1}, {"location": "/", "tdm-reservation": 0}]
    r = rules(doc)
    assert r.reservation("http://s/img/public/a.jpg") == (0, None)  # first in sequence, though shorter-lived
    assert r.reservation("http://s/img/a.jpg") == (1, None)
    assert r.reservation("http://s/x/a.png") == (1, None) and r.reservation("http://s/x/a.png?v=2") == (0, None)
    # percent-encoding is normalized on both sides, as robots.txt matching does
    assert rules([{"location": "/caf%C3%A9/", "tdm-reservation": 1}]).reservation("http://s/café/a.jpg")[0] == 1
    assert rules([{"location": "/a b/", "tdm-reservation": 1}]).reservation("http://s/a%20b/x.jpg")[0] == 1
    assert rules([{"location": "/", "tdm-reservation": 1}]).reservation("http://s/")[0] == 1


@pytest.mark.parametrize("doc, expected", [
    ([{"location": "/", "tdm-reservation": 2}], None),  # protocol error: unset
    ([{"location": "/", "tdm-reservation": "1"}], 1),  # the value as text
    ([{"location": "/", "tdm-reservation": True}], None),
    ([{"location": "/", "tdm-reservation": None}], None),
    ([{"location": "/", "tdm-reservation": 2}, {"location": "/", "tdm-reservation": 1}], None),  # first decides
    ([{"tdm-reservation": 1}, {"location": "/", "tdm-reservation": 0}], 0),  # no location: not a rule
    ([{"location": 7, "tdm-reservation": 1}, "x", None, []], None),
    ([{"location": "/a\nDisallow: /", "tdm-reservation": 1}], None),  # cannot smuggle a robots.txt line
    ([{"location": "/#frag", "tdm-reservation": 1}], None),
    ({"location": "/", "tdm-reservation": 1}, None),  # not an array: the origin does not implement TDMRep
    ([], None),
])
def test_malformed_files_and_rules_are_read_as_the_spec_says(doc, expected):
    assert rules(doc).reservation("http://s/a.jpg")[0] == expected


def test_a_file_that_cannot_be_had_or_read_reserves_nothing():
    for status in (None, 404, 403, 500, 503):
        r = TdmRules(status, b'[{"location": "/", "tdm-reservation": 1}]')
        assert r.reservation("http://s/a.jpg") == (None, None) and r.fetched != "ok"
    for body in (b"", b"not json", b"\xff\xfe[", b'[{"location": "/", "tdm-reservation": 1}'):
        assert TdmRules(200, body).reservation("http://s/a.jpg") == (None, None)
    # a UTF-8 BOM is allowed before the JSON
    bom = codecs.BOM_UTF8 + b'[{"location": "/", "tdm-reservation": 1}]'
    assert TdmRules(200, bom).reservation("http://s/a.jpg")[0] == 1


def test_header_values():
    assert header_reservation(["1"]) == 1 and header_reservation([" 1 "]) == 1 and header_reservation(["0"]) == 0
    assert header_reservation([]) is None and header_reservation(["yes"]) is None and header_reservation(["2"]) is None
    assert header_reservation(["0", "1"]) == 1  # two lines disagree: the reservation stands
    assert reservation_value(1) == 1 and reservation_value(0) == 0 and reservation_value(1.0) is None


def test_a_thread_that_finds_tdmrep_json_still_being_fetched_after_its_wait_refuses_the_row():
    started, release = threading.Event(), threading.Event()

    def slow_fetch(url: str) -> tuple[int | None, bytes]:
        started.set()
        release.wait(5)
        return 200, b'[{"location": "/", "tdm-reservation": 0}]'

    cache = TdmCache(slow_fetch, wait_s=0.1)
    first = threading.Thread(target=cache.refusal, args=("http://s/a.jpg",))
    first.start()
    assert started.wait(5)
    reason, message = cache.refusal("http://s/b.jpg")
    assert reason == "tdm_unknown" and "still being fetched" in message
    release.set()
    first.join()
    assert cache.refusal("http://s/c.jpg") is None  # fetched once, cached
