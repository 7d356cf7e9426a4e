"""The pair rule: the fast urljoin (the same string as urllib's) and the plain-URL fast path of clean_pair."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from wit_builder.core.uid import normalize_url
from wit_builder.pairs.readers.clean import _PLAIN_URL, clean_pair, urljoin

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


@settings(max_examples=1000, deadline=None)  # 60,000 examples ran once by hand: equal
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


# ---- clean_pair: the plain-URL fast path ----

@pytest.mark.parametrize("url", [
    "http://a.example", "https://a.example?x=1", "https://a.example/?x=1", "http://a.example/p/q.jpg?x=1&y=2",
    "http://a.example//double/slash", "http://a_b.example/x@y.jpg", "http://a.example/caf\u00e9.jpg",
    "http://1.2.3.4/x", "http://a.example/p%20q", "http://a.example/[x]", "http://a.example/a;b,c",
    # not plain: the general path decides
    "HTTP://A.Example/X", "http://a.example:80/x", "http://a.example:8080/x", "http://u:p@a.example/x",
    "http://a.example./x", "http://a.example/x#frag", "http://a.example/x\\y", "https://[::1]/x",
    "http://a.example:bad/x", "http://a.example/x\ty",
])
def test_plain_url_fast_path_equals_normalize_url(url: str) -> None:
    try:
        expected: object = normalize_url(url)
    except ValueError:
        expected = "invalid_url"
    got = clean_pair(url, "caption", None, 2048)
    assert (got[0] if isinstance(got, tuple) else got) == expected
    # With a page base (WAT/WARC) an absolute URL resolves to itself, as urljoin would have it.
    try:
        joined: object = normalize_url(urllib.parse.urljoin("https://page.example/dir/index.html", url))
    except ValueError:
        joined = "invalid_url"
    got = clean_pair(url, "caption", "https://page.example/dir/index.html", 2048)
    assert (got[0] if isinstance(got, tuple) else got) == joined
    if _PLAIN_URL.match(url):
        assert "#" not in url and ":" not in url.split("//", 1)[1].split("/", 1)[0]
