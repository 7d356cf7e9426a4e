"""WAT and WARC record reading: the fast urljoin, FastWARC record iteration and damaged gzip members."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from wit_builder.warc_records import urljoin

# ---- urljoin: the same string as urllib's for every input ----

# Pieces that exercise every branch: dot segments, empty segments, params, fragments, schemes, netlocs,
# whitespace and control characters urllib strips, non-ASCII, IPv6 brackets, and ordinary path text.
_PIECES = st.sampled_from([
    "", "/", "//", "///", ".", "..", "./", "../", "/.", "/..", "a", "b.jpg", "img", ".hidden", "..x", "?", "??",
    "?q=1", "&amp;", "#", "#f", ";", ";p=1", ":", "http:", "https:", "HTTP:", "ftp:", "data:", "mailto:",
    "javascript:", "//cdn.example", "//CDN.Example:8080", "//u@h", "//[::1]", "//[bad", "@", "%20", "%", " ",
    "\t", "\n", "\x00", "\x7f", "\\", "é", "\u3000", "~", "+", "=", "[", "]", "'", '"', "<", ">", "{", "}", "|",
])
_REFS = st.lists(_PIECES, max_size=6).map("".join)
_BASES = st.builds(
    lambda scheme, netloc, path, query: f"{scheme}://{netloc}{path}{query}",
    st.sampled_from(["http", "https", "HTTPS", "ftp"]),
    st.sampled_from(["a.example", "A.Example", "a.example:8080", "u:p@a.example", "a_b.example", "[::1]", "é.example",
                     "a.example."]),
    st.lists(_PIECES, max_size=5).map("".join).map(lambda p: p if not p or p[0] in "/?#;" else "/" + p),
    st.sampled_from(["", "?", "?x=1", "?x=1&y=2", "?a/b", "#frag", "?x#f"]),
)


@settings(max_examples=3000, deadline=None)
@given(_BASES, _REFS)
@example("https://site.example/page/1.html", "/img/0/1.jpg?w=1&h=2")
@example("https://site.example/a/b/c.html", "../../../../x.jpg")
@example("https://site.example/a//b/c.html", "d.jpg")
@example("https://site.example/a/./b/", "c/./d/../e.jpg")
@example("https://site.example", "x.jpg")
@example("https://site.example?q=1", "?")
@example("https://site.example/p?q=1", "")
@example("http://site.example/a;p/b", "c")
@example("https://site.example/", "//cdn.example/x.png?w=1")
@example("https://site.example/", "//ho[st/x")
def test_urljoin_equals_urllib(base: str, ref: str) -> None:
    try:
        expected: object = urllib.parse.urljoin(base, ref)
    except ValueError as e:
        expected = type(e)
    try:
        got: object = urljoin(base, ref)
    except ValueError as e:
        got = type(e)
    assert got == expected


@pytest.mark.parametrize("base, ref, joined", [
    ("https://shop.example/a/page.html", "../img/red-dog.jpg", "https://shop.example/img/red-dog.jpg"),
    ("https://shop.example/a/page.html", "//cdn.example/x.png", "https://cdn.example/x.png"),
    ("https://shop.example/a/page.html", "pic.jpg?w=1&h=2", "https://shop.example/a/pic.jpg?w=1&h=2"),
    ("http://blog.example/2020/post/", "/static/pic.jpg", "http://blog.example/static/pic.jpg"),
    ("http://blog.example/2020/post/?page=2", "?page=3", "http://blog.example/2020/post/?page=3"),
])
def test_urljoin_common_image_references(base: str, ref: str, joined: str) -> None:
    assert urljoin(base, ref) == joined
