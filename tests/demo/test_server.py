"""The demo's loopback server (wit_builder.demo.server): the corpus's files, robots.txt, and its hostile cases,
until it stops."""

from __future__ import annotations

import http.client
import io

import pytest
from PIL import Image

from wit_builder.demo import corpus as demo_corpus
from wit_builder.demo.server import DemoServer


def _get(server: DemoServer, path: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)  # never follows redirects
    conn.request("GET", path)
    response = conn.getresponse()
    response.body = response.read()
    conn.close()
    return response


def test_server_serves_files_robots_and_hostile_cases(corpus, written):
    folder, _ = written
    with DemoServer(folder / demo_corpus.WWW, corpus.redirects) as server:
        ok = _get(server, "/img/cat/cat-000.jpg")
        assert (ok.status, ok.getheader("Content-Type"), ok.body) == (200, "image/jpeg",
                                                                       corpus.files["img/cat/cat-000.jpg"])
        robots = _get(server, "/robots.txt")
        assert robots.status == 200 and b"Disallow: /private/" in robots.body
        private = [r.path for r in corpus.rows if r.kind == "robots_disallowed"][0]
        assert private.startswith("/private/") and _get(server, private).status == 200  # only robots.txt forbids it
        assert _get(server, [r.path for r in corpus.rows if r.kind == "http_404"][0]).status == 404
        assert _get(server, "/img/").status == 404  # no directory listings
        html = _get(server, "/hostile/page.jpg")
        assert html.getheader("Content-Type") == "image/jpeg" and html.body.startswith(b"<!doctype html>")
        truncated = _get(server, "/hostile/truncated.jpg").body
        with pytest.raises(OSError), Image.open(io.BytesIO(truncated)) as img:
            img.load()
        redirect = _get(server, "/hostile/redirect.jpg")
        assert (redirect.status, redirect.getheader("Location")) == (302, demo_corpus.METADATA_URL)
        bomb_bytes = _get(server, "/hostile/huge.png").body
        with pytest.warns(Image.DecompressionBombWarning), Image.open(io.BytesIO(bomb_bytes)) as bomb:
            assert bomb.size[0] * bomb.size[1] > Image.MAX_IMAGE_PIXELS
    with pytest.raises(OSError):  # stopped: the port no longer answers
        _get(server, "/robots.txt")
