"""Every body the fetcher reads is bounded in bytes before and after decoding (issue 23): images, robots.txt,
tdmrep.json and redirects, against compression bombs and bodies that never end, in a child process whose address
space is capped, with its peak RSS measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import hostile_server as hs
from wit_builder.download.fetch import Fetcher
from wit_builder.download.options import FetchConfig

FAST = dict(allow_private_networks=True, connect_timeout_s=1.0, read_timeout_s=1.0, deadline_s=5.0, retries=0,
            backoff_base_s=0.01, backoff_max_s=2.0, max_bytes=1 << 20)

_PROBE = r"""
import json, resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from tests import hostile_server as hs
from tests.download.test_bodies import FAST
from wit_builder.download.fetch import Fetcher
from wit_builder.download.options import FetchConfig
from wit_builder.download.tdmrep import TDMREP_PATH

kib = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = {}
with hs.HostileServer() as s:
    gz = hs.gzip_bomb(512)                                           # 512 MiB decoded, ~0.5 MB sent
    gz_robots = hs.gzip_bomb(512, prefix=b"User-agent: *\nDisallow: /private/\n")
    br, zst = hs.brotli_bomb(512), hs.zstd_bomb(512)                 # 512 MiB decoded, a few KB sent
    deflate = hs.deflate_bomb(256)
    s.serve("/warm.jpg", hs.Response(200, b"x" * 1000))
    fetcher = Fetcher(FetchConfig(**FAST))
    fetcher.fetch(s.url("/warm.jpg"))
    baseline = kib()
    cases = {
        "gzip_image": s.encoded("/gz.jpg", gz, "gzip"),
        "gzip_image_no_length": s.encoded("/gz2.jpg", gz, "gzip", with_length=False),
        "br_image": s.encoded("/br.jpg", br, "br"),
        "zstd_image": s.encoded("/zst.jpg", zst, "zstd"),
        "deflate_image": s.encoded("/df.jpg", deflate, "deflate", with_length=False),
        "endless_image": s.endless("/endless.jpg"),
        "redirect_endless_body": s.endless_redirect("/moved.jpg", "/warm.jpg"),
    }
    for name, url in cases.items():
        r = fetcher.fetch(url)
        results[name] = [r.status, r.error_message]
        assert r.data is None or len(r.data) <= FAST["max_bytes"]
    fetcher.close()
    # robots.txt and tdmrep.json, each a bomb or an endless redirect, on fresh origins (a fetcher each)
    with hs.HostileServer() as r1, hs.HostileServer() as r2, hs.HostileServer() as r3:
        r1.encoded("/robots.txt", gz_robots, "gzip", content_type="text/plain")
        r2.endless_redirect("/robots.txt", "/robots2.txt")
        r2.serve("/robots2.txt", hs.Response(200, b"User-agent: *\nDisallow: /private/\n"))
        r3.endless_redirect(TDMREP_PATH, "/tdm2")
        r3.encoded("/tdm2", hs.gzip_bomb(512, prefix=b'[{"location": "/", "tdm-reservation": 1}]'), "gzip",
                   content_type="application/json")
        for name, server in (("robots_gzip", r1), ("robots_endless_redirect", r2), ("tdmrep_bomb", r3)):
            server.serve("/private/a.jpg", hs.Response(200, b"img"))
            f = Fetcher(FetchConfig(**FAST))
            r = f.fetch(server.url("/private/a.jpg"))
            results[name] = [r.status, r.reason]
            f.close()
print(json.dumps({"baseline_kib": baseline, "peak_kib": kib(), "results": results}))
"""


def test_bombs_and_endless_bodies_on_every_path_stay_bounded_under_rlimit():
    """Each case would take 256-512 MiB (or for ever) if read whole; the child's address space is capped at
    1 GiB and its peak RSS may grow by at most 64 MiB over the warm baseline."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(1 << 30)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    results = report["results"]
    for name in ("gzip_image", "gzip_image_no_length", "br_image", "deflate_image", "endless_image"):
        status, message = results[name]
        assert status == "failed_to_download" and "max_bytes=1048576" in message, (name, message)
    # zstd: cut at the cap where urllib3 decodes it, else handed over undecoded (its few KB, not an image)
    assert results["zstd_image"][0] == "success" or "max_bytes=1048576" in results["zstd_image"][1]
    assert results["redirect_endless_body"][0] == "success"  # followed, its body never read
    # the policy files: read up to their limits, their rules still apply
    assert results["robots_gzip"] == ["blocked", "robots_txt"]
    assert results["robots_endless_redirect"] == ["blocked", "robots_txt"]
    assert results["tdmrep_bomb"][0] == "success"  # cut at 500 KiB: not a JSON array, so no reservation
    assert report["peak_kib"] - report["baseline_kib"] < 64 << 10, report


def test_raw_bytes_are_capped_before_decoding():
    """A body whose decoded size stays small but whose wire size is over the cap fails as well (``raw``)."""
    with hs.HostileServer() as s:
        # gzip of random-looking bytes is larger than the bytes: 1.5 MiB on the wire, without a length
        noise = os.urandom(3 << 19)
        import gzip
        url = s.encoded("/n.jpg", gzip.compress(noise, mtime=0), "gzip", with_length=False)
        f = Fetcher(FetchConfig(**{**FAST, "max_bytes": (3 << 19) + 10}))
        r = f.fetch(url)
        f.close()
    assert r.status == "failed_to_download" and "(raw)" in r.error_message, r.error_message


@pytest.mark.parametrize("declared", [True, False])
def test_a_body_at_the_cap_arrives_whole(declared):
    with hs.HostileServer() as s:
        data = b"y" * (1 << 20)
        url = s.encoded("/ok.jpg", __import__("gzip").compress(data, mtime=0), "gzip", with_length=declared)
        f = Fetcher(FetchConfig(**FAST))
        r = f.fetch(url)
        f.close()
    assert (r.status, r.data) == ("success", data)
