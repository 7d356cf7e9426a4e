"""Stable identity and seeded ranks of (url, caption) pairs.

``uid`` is a 128-bit BLAKE2b of the normalized URL and the cleaned caption, so it is the same on every
machine, Python version and run. The balance step ranks pairs by a keyed hash of the uid (``hash_rank``)
and draws per (uid, query) coins (``draw``); both depend only on the uid, the query and the seed.
"""

from __future__ import annotations

import hashlib
import unicodedata
from urllib.parse import urlsplit, urlunsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_url(url: str) -> str:
    """Canonical form of an absolute http(s) URL: lower-case scheme and host, no default port, no fragment.

    Path and query stay byte for byte (servers may treat them case-sensitively). Raises ValueError for a
    URL that ``urllib`` cannot split (bad IPv6 literal, non-numeric port).
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError(f"URL has no host: {url[:200]!r}")
    port = parts.port  # raises ValueError on a bad port
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    if parts.username or parts.password:
        userinfo = parts.username or ""
        if parts.password:
            userinfo += f":{parts.password}"
        netloc = f"{userinfo}@{netloc}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def clean_caption(caption: str) -> str:
    """The caption as stored: Unicode NFC, runs of whitespace (newlines, tabs) folded to one space."""
    return " ".join(unicodedata.normalize("NFC", caption).split())


def pair_uid(url: str, caption: str) -> str:
    """32 hex chars identifying a pair; ``url`` and ``caption`` must already be normalized/cleaned."""
    return hashlib.blake2b(f"{url}\n{caption}".encode(), digest_size=16).hexdigest()


def _seed_key(seed: int) -> bytes:
    return seed.to_bytes(16, "big", signed=True)


def hash_rank(uid: str, seed: int) -> int:
    """A uniform 63-bit rank of a uid under ``seed`` (fits Arrow/Beam int64 without sign tricks).

    One rank per uid, shared by all its queries: with a larger cap (or ``--oversample``) every query's
    selection is a superset of its selection at a smaller cap, so stage 4 can cap again consistently.
    """
    digest = hashlib.blake2b(uid.encode(), digest_size=8, key=_seed_key(seed)).digest()
    return int.from_bytes(digest, "big") >> 1


def draw(uid: str, query: str, seed: int) -> float:
    """A uniform number in [0, 1) for one (uid, query) under ``seed``: probabilistic balancing's coin."""
    digest = hashlib.blake2b(f"{query}\n{uid}".encode(), digest_size=8, key=_seed_key(seed)).digest()
    return (int.from_bytes(digest, "big") >> 11) / float(1 << 53)
