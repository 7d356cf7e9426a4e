"""Every opt-out end to end through the native fetcher against a loopback server (issue 23): robots.txt bytes as
real servers send them, X-Robots-Tag in every documented form, TDMRep's header and /.well-known/tdmrep.json;
each blocked row names its reason and the resource itself is never requested."""

from __future__ import annotations

import codecs
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests import hostile_server as hs
from wit_builder.download.fetch import Fetcher
from wit_builder.download.options import FetchConfig
from wit_builder.download.tdmrep import TDMREP_PATH

FAST = dict(allow_private_networks=True, connect_timeout_s=1.0, read_timeout_s=0.5, deadline_s=1.5, retries=0,
            backoff_base_s=0.01, backoff_max_s=2.0, max_bytes=1 << 20)
IMG = b"\xff\xd8 not decoded here"


def fetch(s: hs.HostileServer, path: str, **config) -> tuple[str, str | None, str | None]:
    fetcher = Fetcher(FetchConfig(**{**FAST, **config}))
    try:
        r = fetcher.fetch(s.url(path))
        return r.status, r.reason, r.error_message
    finally:
        fetcher.close()


# ---- robots.txt ----

@pytest.mark.parametrize("robots", [
    codecs.BOM_UTF8 + b"User-agent: *\nDisallow: /\n",  # the example
    codecs.BOM_UTF16_LE + "User-agent: *\r\nDisallow: /\r\n".encode("utf-16-le"),
    b"\r\n# ours\r\nUSER-AGENT :  wit-builder \r\nDISALLOW:/", b"User-agent: *\rDisallow: /",
])
def test_a_robots_txt_in_any_shape_blocks_before_the_image_is_requested(robots):
    with hs.HostileServer() as s:
        s.serve("/robots.txt", hs.Response(200, robots, content_type="text/plain"))
        s.image("/a.jpg", IMG)
        assert fetch(s, "/a.jpg")[:2] == ("blocked", "robots_txt")
        assert s.requests_to("/a.jpg") == []


def test_robots_txt_behind_redirects_whose_bodies_never_end_is_followed_without_reading_them():
    with hs.HostileServer() as s:
        s.endless_redirect("/robots.txt", "/r1")
        s.endless_redirect("/r1", s.url("/r2"), status=308)
        s.serve("/r2", hs.Response(200, b"User-agent: *\nDisallow: /private/\n", content_type="text/plain"))
        s.image("/private/a.jpg", IMG)
        s.image("/a.jpg", IMG)
        assert fetch(s, "/private/a.jpg")[:2] == ("blocked", "robots_txt")
        assert fetch(s, "/a.jpg")[0] == "success"


def test_robots_txt_redirect_loops_and_other_schemes_count_as_unreachable():
    with hs.HostileServer() as s:
        s.redirect("/robots.txt", "/loop")
        s.redirect("/loop", "/robots.txt")
        s.image("/a.jpg", IMG)
        assert fetch(s, "/a.jpg")[:2] == ("blocked", "robots_txt_unreachable")
    with hs.HostileServer() as s:
        s.redirect("/robots.txt", "ftp://example.org/robots.txt")
        s.image("/a.jpg", IMG)
        assert fetch(s, "/a.jpg")[:2] == ("blocked", "robots_txt_unreachable") and s.requests_to("/a.jpg") == []


def test_a_gzip_bomb_robots_txt_is_read_up_to_its_limit():
    with hs.HostileServer() as s:
        s.encoded("/robots.txt", hs.gzip_bomb(64, prefix=b"User-agent: *\nDisallow: /private/\n"), "gzip",
                  content_type="text/plain")
        s.image("/private/a.jpg", IMG)
        s.image("/a.jpg", IMG)
        assert fetch(s, "/private/a.jpg")[:2] == ("blocked", "robots_txt") and fetch(s, "/a.jpg")[0] == "success"


# ---- X-Robots-Tag ----

@pytest.mark.parametrize("lines, blocked", [
    ([("X-Robots-Tag", "none")], True),
    ([("X-Robots-Tag", "googlebot: noindex, wit-builder: noimageai")], True),
    ([("X-Robots-Tag", "googlebot: noindex"), ("x-robots-tag", "WIT-BUILDER: NOAI")], True),  # two lines
    ([("X-Robots-Tag", "nofollow"), ("X-Robots-Tag", "noimageindex")], True),
    ([("X-Robots-Tag", "unavailable_after: 25 Jun 2010 15:00:00 PST")], True),
    ([("X-Robots-Tag", "googlebot: none"), ("X-Robots-Tag", "bingbot: noai")], False),
    ([("X-Robots-Tag", "nofollow, noarchive, max-image-preview: large")], False),
])
def test_x_robots_tag_forms(lines, blocked):
    with hs.HostileServer() as s:
        s.with_headers("/a.jpg", IMG, lines)
        status, reason, message = fetch(s, "/a.jpg")
        assert (status, reason) == (("blocked", "x_robots_tag") if blocked else ("success", None)), message
        assert fetch(s, "/a.jpg", respect_x_robots_tag=False)[0] == "success"


# ---- TDMRep ----

def test_tdm_reservation_header_blocks_and_names_the_policy():
    with hs.HostileServer() as s:
        s.with_headers("/a.jpg", IMG, [("tdm-reservation", "1"), ("tdm-policy", "https://p.example/policy.json")])
        s.with_headers("/b.jpg", IMG, [("TDM-Reservation", "0")])
        s.with_headers("/c.jpg", IMG, [("tdm-reservation", "yes")])  # a protocol error: unset
        status, reason, message = fetch(s, "/a.jpg")
        assert (status, reason) == ("blocked", "tdm_reserved") and "https://p.example/policy.json" in message
        assert fetch(s, "/b.jpg")[0] == fetch(s, "/c.jpg")[0] == "success"
        assert fetch(s, "/a.jpg", respect_tdmrep=False)[0] == "success"


def test_tdmrep_json_reserves_paths_before_they_are_requested_and_is_fetched_once():
    doc = [{"location": "/free/*", "tdm-reservation": 0}, {"location": "/", "tdm-reservation": 1,
                                                             "tdm-policy": "https://p.example/tdm"}]
    with hs.HostileServer() as s:
        s.serve(TDMREP_PATH, hs.Response(200, json.dumps(doc).encode(), content_type="application/json"))
        urls = [s.image(f"/img{i}.jpg", IMG) for i in range(12)] + [s.image(f"/free/{i}.jpg", IMG) for i in range(4)]
        fetcher = Fetcher(FetchConfig(**FAST))
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(fetcher.fetch, urls))
        fetcher.close()
        assert [(r.status, r.reason) for r in results[:12]] == [("blocked", "tdm_reserved")] * 12
        assert all("tdmrep.json reserves" in r.error_message and "https://p.example/tdm" in r.error_message
                   for r in results[:12])
        assert [r.status for r in results[12:]] == ["success"] * 4
        assert len(s.requests_to(TDMREP_PATH)) == 1
        assert all(s.requests_to(f"/img{i}.jpg") == [] for i in range(12))
        assert fetch(s, "/img0.jpg", respect_tdmrep=False)[0] == "success"


def test_tdmrep_json_behind_an_endless_redirect_reserves_its_origin():
    with hs.HostileServer() as s:
        s.endless_redirect(TDMREP_PATH, TDMREP_PATH + "2")
        s.serve(TDMREP_PATH + "2", hs.Response(200, b'[{"location": "/", "tdm-reservation": 1}]'))
        s.image("/a.jpg", IMG)
        assert fetch(s, "/a.jpg")[:2] == ("blocked", "tdm_reserved") and s.requests_to("/a.jpg") == []


def test_each_redirect_hop_is_checked_against_its_own_origins_tdmrep_json():
    with hs.HostileServer() as a, hs.HostileServer() as b:
        b.serve(TDMREP_PATH, hs.Response(200, b'[{"location": "/x", "tdm-reservation": 1}]'))
        b.image("/x.jpg", IMG)
        a.redirect("/a.jpg", b.url("/x.jpg"))  # origin a has no tdmrep.json (404)
        assert fetch(a, "/a.jpg")[:2] == ("blocked", "tdm_reserved")
        assert b.requests_to("/x.jpg") == [] and len(a.requests_to(TDMREP_PATH)) == 1


@pytest.mark.parametrize("response", [
    hs.Response(404), hs.Response(500), hs.Response(403), hs.Response(200, b"<html>not json</html>"),
    hs.Response(200, b'{"location": "/", "tdm-reservation": 1}'),
])
def test_a_tdmrep_json_that_cannot_be_had_or_read_reserves_nothing(response):
    with hs.HostileServer() as s:
        s.serve(TDMREP_PATH, response)
        s.image("/a.jpg", IMG)
        assert fetch(s, "/a.jpg")[0] == "success"


def test_a_trickling_tdmrep_json_is_cut_at_the_deadline_and_reserves_nothing():
    with hs.HostileServer() as s:
        s.trickle(TDMREP_PATH, "body", interval_s=0.2)
        s.image("/a.jpg", IMG)
        started = time.monotonic()
        assert fetch(s, "/a.jpg", deadline_s=0.8)[0] == "success"
        assert time.monotonic() - started < 5 and len(s.requests_to(TDMREP_PATH)) == 1
