"""The native fetcher against a hostile server on 127.0.0.1, its policy pieces through it (on their own: test_netsafety,
test_robots, test_ratelimit)."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests import hostile_server as hs
from wit_builder.download import http_client
from wit_builder.download.fetch import (
    Fetcher,
    backoff_delay,
    parse_retry_after,
    user_agent,
)
from wit_builder.download.netsafety import AddressPolicy
from wit_builder.download.options import FetchConfig

FAST = dict(allow_private_networks=True, connect_timeout_s=1.0, read_timeout_s=0.5, deadline_s=0.6, retries=1,
            backoff_base_s=0.01, backoff_max_s=2.0, max_bytes=1 << 20)


@pytest.fixture()
def server():
    with hs.HostileServer() as s:
        s.serve("/robots.txt", hs.Response(200, b"User-agent: *\nDisallow: /private/\n", content_type="text/plain"))
        yield s


@pytest.fixture()
def fetcher():
    f = Fetcher(FetchConfig(**FAST))
    yield f
    f.close()


def test_good_image_arrives_whole_with_an_honest_user_agent(server, fetcher):
    data = hs.jpeg()
    result = fetcher.fetch(server.image("/a.jpg", data))
    assert (result.status, result.http_status, result.data) == ("success", 200, data)
    assert server.requests_to("/a.jpg")[0].headers["User-Agent"].startswith("wit-builder/")
    assert "+mailto:ops@example.org" in user_agent("mailto:ops@example.org")


def test_404_fails_once_without_retry(server, fetcher):
    result = fetcher.fetch(server.url("/missing.jpg"))
    assert (result.status, result.http_status, result.attempts) == ("failed_to_download", 404, 1)
    assert len(server.requests_to("/missing.jpg")) == 1


def test_500_then_200_is_retried(server, fetcher):
    url = server.sequence("/flaky.jpg", [hs.Response(500), hs.Response(200, b"img", content_type="image/jpeg")])
    result = fetcher.fetch(url)
    assert (result.status, result.data, result.attempts) == ("success", b"img", 2)


def test_429_honours_retry_after(server, fetcher):
    url = server.sequence("/busy.jpg", [hs.Response(429, headers={"Retry-After": "1"}),
                                        hs.Response(200, b"img", content_type="image/jpeg")])
    assert fetcher.fetch(url).status == "success"
    first, second = server.requests_to("/busy.jpg")
    assert second.time - first.time >= 0.95  # waited what the server asked, not the 10 ms backoff


def test_transient_failures_give_up_after_the_retries(server, fetcher):
    url = server.serve("/down.jpg", hs.Response(503))
    result = fetcher.fetch(url)
    assert (result.status, result.http_status, result.attempts) == ("failed_to_download", 503, 2)


def test_slow_drip_is_cut_at_the_deadline(server, fetcher):
    started = time.monotonic()
    result = fetcher.fetch(server.slow_drip("/slow.jpg"))
    assert result.status == "failed_to_download" and "deadline" in result.error_message
    assert time.monotonic() - started < 5


def test_endless_body_is_cut_at_the_byte_cap(server, fetcher):
    result = fetcher.fetch(server.endless("/endless.jpg"))
    assert result.status == "failed_to_download" and "max_bytes" in result.error_message


def test_short_body_and_stalled_body_fail_cleanly(server, fetcher):
    short = fetcher.fetch(server.short_body("/short.jpg"))
    assert short.status == "failed_to_download" and short.attempts == 1
    patient = Fetcher(FetchConfig(**{**FAST, "deadline_s": 5.0}))
    stalled = patient.fetch(server.stall("/stall.jpg", seconds=1.5))
    assert stalled.status == "failed_to_download" and stalled.attempts == 2  # a read timeout is transient
    assert "timeout" in stalled.error_message or "deadline" in stalled.error_message
    assert fetcher.fetch("http://127.0.0.1:notaport/a.jpg").status == "failed_to_download"


def test_declared_oversize_is_refused_before_reading(server, fetcher):
    result = fetcher.fetch(server.image("/huge.jpg", bytes(2 << 20)))
    assert result.status == "failed_to_download" and "exceeds max_bytes" in result.error_message


def test_redirects_are_followed_and_loops_stopped(server, fetcher):
    server.image("/final.jpg", b"img")
    assert fetcher.fetch(server.redirect("/moved.jpg", "/final.jpg", 301)).data == b"img"
    server.redirect("/loop/a", "/loop/b")
    loop = fetcher.fetch(server.redirect("/loop/b", "/loop/a"))
    assert loop.status == "failed_to_download" and "redirect loop" in loop.error_message


def test_redirect_to_link_local_is_refused_without_connecting(server, fetcher, monkeypatch):
    connected = []

    class RecordingSocket(socket.socket):
        def connect(self, address):
            connected.append(address[0])
            return super().connect(address)

    monkeypatch.setattr(http_client.socket, "socket", RecordingSocket)
    result = fetcher.fetch(server.redirect("/meta", "http://169.254.169.254/latest/meta-data/"))
    assert result.status == "blocked" and "169.254.169.254" in result.error_message
    assert "169.254.169.254" not in connected and "127.0.0.1" in connected


def test_loopback_is_refused_without_the_flag(server):
    strict = Fetcher(FetchConfig(**{**FAST, "allow_private_networks": False}))
    result = strict.fetch(server.image("/a.jpg", b"img"))
    assert result.status == "blocked" and "loopback" in result.error_message
    assert server.requests_to("/a.jpg") == [] and server.requests_to("/robots.txt") == []


def test_only_http_and_https(fetcher):
    for url in ("ftp://example.org/a.jpg", "file:///etc/passwd", "data:image/png;base64,AAAA"):
        assert fetcher.fetch(url).status == "blocked"


def test_opt_outs_robots_and_x_robots_tag(server, fetcher):
    assert fetcher.fetch(server.image("/private/a.jpg", b"img")).status == "blocked"
    assert server.requests_to("/private/a.jpg") == []
    noai = fetcher.fetch(server.image("/noai.jpg", b"img", **{"X-Robots-Tag": "noai"}))
    assert noai.status == "blocked" and "noai" in noai.error_message
    other_bot = server.image("/otherbot.jpg", b"img", **{"X-Robots-Tag": "otherbot: noimageai"})
    assert fetcher.fetch(other_bot).status == "success"
    lax = Fetcher(FetchConfig(**FAST, respect_robots_txt=False, respect_x_robots_tag=False))
    assert lax.fetch(server.url("/private/a.jpg")).status == "success"
    assert lax.fetch(server.url("/noai.jpg")).status == "success"


def test_robots_txt_fetched_once_under_many_threads(server, fetcher):
    urls = [server.image(f"/img{i}.jpg", b"img") for i in range(20)]
    with ThreadPoolExecutor(8) as pool:
        assert {r.status for r in pool.map(fetcher.fetch, urls)} == {"success"}
    assert len(server.requests_to("/robots.txt")) == 1


def test_robots_txt_server_error_disallows_the_origin():
    with hs.HostileServer() as s:
        s.serve("/robots.txt", hs.Response(500))
        result = Fetcher(FetchConfig(**FAST)).fetch(s.image("/a.jpg", b"img"))
        assert result.status == "blocked" and s.requests_to("/a.jpg") == []


def test_per_host_concurrency_is_capped(server):
    in_flight, peak, lock = [0], [0], threading.Lock()

    def handler(h):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        hs.send(h, hs.Response(200, b"img", content_type="image/jpeg"))

    server.routes["/capped.jpg"] = handler
    capped = Fetcher(FetchConfig(**{**FAST, "per_host_concurrency": 2}))
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(capped.fetch, [server.url("/capped.jpg")] * 12))
    assert {r.status for r in results} == {"success"} and peak[0] == 2


def test_retry_after_and_backoff():
    import random

    assert parse_retry_after("7") == 7.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    rng = random.Random(0)
    delays = [backoff_delay(a, 0.5, 30.0, None, rng) for a in range(8)]
    assert all(0 <= d <= min(30.0, 0.5 * 2**a) for a, d in enumerate(delays))
    assert backoff_delay(0, 0.5, 30.0, 12.0, rng) == 12.0 and backoff_delay(0, 0.5, 30.0, 3600.0, rng) == 30.0


# ---- every wait bounded by the deadline (issue 13) ----

@pytest.mark.parametrize("part", ["status", "headers", "body"])
def test_a_trickling_status_line_header_or_body_is_cut_at_the_deadline(server, part):
    """One byte every 0.2 s never trips a 1 s read timeout; the 1.5 s deadline must still end the exchange."""
    cfg = FetchConfig(**{**FAST, "read_timeout_s": 1.0, "deadline_s": 1.5, "retries": 2})
    fetcher = Fetcher(cfg)
    started = time.monotonic()
    result = fetcher.fetch(server.trickle(f"/trickle-{part}.jpg", part, interval_s=0.2))
    elapsed = time.monotonic() - started
    assert result.status == "failed_to_download" and "deadline" in result.error_message, result
    assert result.attempts == 1  # a server slower than the deadline is not asked again
    assert elapsed < 1.5 + 3.0, elapsed  # generous: a loaded machine
    fetcher.close()


def test_a_trickling_robots_txt_is_bounded_and_does_not_hold_the_host_hostage():
    with hs.HostileServer() as s:
        s.trickle("/robots.txt", "headers", interval_s=0.2)
        urls = [s.image(f"/r{i}.jpg", b"img") for i in range(6)]
        fetcher = Fetcher(FetchConfig(**{**FAST, "read_timeout_s": 1.0, "deadline_s": 1.5}))
        started = time.monotonic()
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(fetcher.fetch, urls))
        elapsed = time.monotonic() - started
        # robots.txt unreachable within the deadline: the whole origin counts as disallowed (RFC 9309 2.3.1.4)
        assert {r.status for r in results} == {"blocked"}
        assert all("robots.txt" in r.error_message for r in results)
        assert elapsed < 2 * 1.5 + 3.0, elapsed  # every row waited at most about one deadline
        assert all(s.requests_to(f"/r{i}.jpg") == [] for i in range(6))
        assert len(s.requests_to("/robots.txt")) == 1


@pytest.mark.parametrize("location", [b"/caf\xe9.jpg", b"\xff\xfe/x.jpg", b"http://[::1/x", b"/a\x01b.jpg"])
def test_a_broken_redirect_location_is_a_failed_download_with_a_reason(server, fetcher, location):
    result = fetcher.fetch(server.raw_redirect("/bad-redirect.jpg", location))
    assert result.status == "failed_to_download" and "Location" in (result.error_message or ""), result
    assert result.http_status == 302


def test_a_utf8_redirect_location_is_followed(server, fetcher):
    server.image("/caf%C3%A9.jpg", b"img")
    result = fetcher.fetch(server.raw_redirect("/utf8-redirect.jpg", "/café.jpg".encode()))
    assert (result.status, result.data) == ("success", b"img")


# ---- address policy: every special-purpose class refused, through the downloader's own path (issue 13) ----

ALWAYS_REFUSED_ADDRESSES = [
    "0.0.0.0", "0.1.2.3", "192.0.0.8", "192.0.0.170", "192.0.0.192", "192.0.2.1", "192.88.99.1", "198.18.0.1",
    "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
    "::", "::127.0.0.1", "64:ff9b:1::1", "100::1", "2001:2::1", "2001:10::1", "2001:db8::1", "3fff::1",
    "5f00::1", "fec0::1", "fed0::abcd", "ff02::1", "ff05::1:3",
    "2002:c000:0208::1",          # 6to4 of 192.0.2.8... documentation range
    "64:ff9b::c000:c0",           # NAT64 of 192.0.0.192 (Oracle Cloud metadata)
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo whose client is 192.0.2.45
    "::ffff:0:e000:1",            # SIIT of 224.0.0.1
]
METADATA_ADDRESSES = [
    "169.254.169.254", "169.254.170.2", "100.100.100.200", "168.63.129.16", "fd00:ec2::254",
    "::ffff:169.254.169.254", "2002:a9fe:a9fe::1", "64:ff9b::a9fe:a9fe", "64:ff9b::6464:64c8",
    "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo whose client is 169.254.169.254 (XOR-obfuscated)
]
PRIVATE_ADDRESSES = ["127.0.0.1", "10.1.2.3", "172.16.5.4", "192.168.0.1", "100.64.0.1", "::1", "fd12:3456::1",
                     "2002:7f00:1::1", "64:ff9b::a00:1", "::ffff:192.168.1.1"]


@pytest.fixture()
def resolver_to(monkeypatch):
    """Make every host name resolve to one chosen address; record every socket connect attempted."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    connects: list = []

    class RecordingSocket(socket.socket):
        def connect(self, address):
            connects.append(address)
            return super().connect(address)

    monkeypatch.setattr(http_client.socket, "socket", RecordingSocket)
    chosen: list[str] = []

    def fake_getaddrinfo(host, port, *args, **kwargs):
        address = chosen[0]
        if ":" in address:
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr("wit_builder.download.netsafety.socket.getaddrinfo", fake_getaddrinfo)

    def accepted() -> int:
        n = 0
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                return n
            conn.close()
            n += 1

    def set_address(address: str):
        chosen[:] = [address]
        return listener.getsockname()[1], connects, accepted

    yield set_address
    listener.close()


@pytest.mark.parametrize("robots", [True, False])
def test_every_special_purpose_class_is_refused_without_a_connection(resolver_to, robots):
    flags = [dict(), dict(allow_private_networks=True), dict(allow_private_networks=True, allow_link_local=True)]
    for address in ALWAYS_REFUSED_ADDRESSES:
        for extra in flags:
            port, connects, accepted = resolver_to(address)
            fetcher = Fetcher(FetchConfig(**{**FAST, **extra, "respect_robots_txt": robots}))
            result = fetcher.fetch(f"http://images.example.org:{port}/a.jpg")
            assert result.status == "blocked" and "always refused" in result.error_message, (address, extra, result)
            assert connects == [] and accepted() == 0, (address, extra)


@pytest.mark.parametrize("address", METADATA_ADDRESSES)
def test_allow_private_networks_never_opens_a_metadata_endpoint(resolver_to, address):
    port, connects, accepted = resolver_to(address)
    for extra in (dict(), dict(allow_private_networks=True)):
        fetcher = Fetcher(FetchConfig(**{**FAST, **extra}))
        result = fetcher.fetch(f"http://metadata.example.org:{port}/latest/meta-data/")
        assert result.status == "blocked" and "metadata" in result.error_message, (address, result)
    assert connects == [] and accepted() == 0
    assert AddressPolicy(allow_private=True, allow_link_local=True).refusal(address) is None


@pytest.mark.parametrize("address", PRIVATE_ADDRESSES)
def test_private_classes_need_the_private_flag(resolver_to, address):
    port, connects, accepted = resolver_to(address)
    result = Fetcher(FetchConfig(**{**FAST, "allow_private_networks": False})).fetch(
        f"http://intranet.example.org:{port}/a.jpg")
    assert result.status == "blocked" and connects == [] and accepted() == 0
    assert AddressPolicy(allow_private=True).refusal(address) is None


def test_robots_wildcards_and_size_limit_end_to_end():
    with hs.HostileServer() as s:
        s.serve("/robots.txt", hs.Response(200, b"User-agent: *\nDisallow: /*.jpg$\nDisallow: /img/\n"
                                                b"Allow: /img/public/\n", content_type="text/plain"))
        fetcher = Fetcher(FetchConfig(**FAST))
        assert fetcher.fetch(s.image("/photo.jpg", b"img")).status == "blocked"
        assert fetcher.fetch(s.image("/img/public/a.png", b"img")).status == "success"
        assert fetcher.fetch(s.image("/img/secret/a.png", b"img")).status == "blocked"
        assert s.requests_to("/photo.jpg") == [] and s.requests_to("/img/secret/a.png") == []
    big = b"User-agent: *\nDisallow: /early/\n" + b"#" * (2 << 20) + b"\nDisallow: /late/\n"
    with hs.HostileServer() as t:  # a robots.txt over 500 KiB: read up to the limit, the rest ignored
        t.serve("/robots.txt", hs.Response(200, big, content_type="text/plain"))
        fetcher = Fetcher(FetchConfig(**{**FAST, "deadline_s": 5.0}))
        assert fetcher.fetch(t.image("/early/a.png", b"img")).status == "blocked"
        assert fetcher.fetch(t.image("/late/a.png", b"img")).status == "success"


def test_per_host_cap_holds_across_spellings_of_one_host(server, monkeypatch):
    """host_shards groups "Host." and "host" as one host; the fetcher's limiter must key them alike too, or
    one shard hits the host with twice the configured concurrency."""
    real = socket.getaddrinfo
    monkeypatch.setattr("wit_builder.download.netsafety.socket.getaddrinfo",
                        lambda host, *a, **k: real("127.0.0.1" if host.rstrip(".").lower() == "wit.test" else host,
                                                   *a, **k))
    in_flight, peak, lock = [0], [0], threading.Lock()

    def handler(h):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        hs.send(h, hs.Response(200, b"img", content_type="image/jpeg"))

    server.routes["/spelled.jpg"] = handler
    capped = Fetcher(FetchConfig(**{**FAST, "deadline_s": 5.0, "per_host_concurrency": 1}))
    spellings = [f"http://{h}:{server.port}/spelled.jpg" for h in ("wit.test", "wit.test.", "WIT.test.")]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(capped.fetch, spellings * 4))
    assert {r.status for r in results} == {"success"} and peak[0] == 1, peak[0]
