"""The guarded HTTP session on its own (wit_builder.download.http_client): the address policy at connect time,
no proxies from the environment, and a deadline that bounds every socket wait of an exchange."""

from __future__ import annotations

import time

import pytest
import requests

from tests import hostile_server as hs
from wit_builder.download.http_client import exchange_deadline, guarded_session
from wit_builder.download.netsafety import AddressPolicy, BlockedAddressError, DnsCache


def session(allow_private: bool) -> requests.Session:
    return guarded_session(DnsCache(AddressPolicy(allow_private=allow_private)), "wit-builder/test", 4)


def test_connections_go_through_the_address_policy_and_ignore_proxies(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # would swallow every request if honoured
    with hs.HostileServer() as s:
        url = s.image("/a.jpg", b"img")
        allowed = session(allow_private=True)
        reply = allowed.get(url, timeout=5)
        assert (reply.status_code, reply.content) == (200, b"img")
        assert s.log[-1].headers.get("User-Agent") == "wit-builder/test"
        with pytest.raises(BlockedAddressError, match="loopback address 127.0.0.1"):
            session(allow_private=False).get(url, timeout=5)
        assert len(s.requests_to("/a.jpg")) == 1  # the refused session never connected


def test_the_exchange_deadline_cuts_a_trickling_body_the_read_timeout_never_trips():
    with hs.HostileServer() as s:
        url = s.trickle("/body.jpg", "body", interval_s=0.1)
        started = time.monotonic()
        with exchange_deadline(time.monotonic() + 1.0) as scope, pytest.raises(requests.exceptions.RequestException):
            session(allow_private=True).get(url, timeout=5)  # reads the whole body
        assert scope.expired and time.monotonic() - started < 4.0


def test_a_nested_deadline_keeps_the_earlier_end():
    with exchange_deadline(time.monotonic() + 1.0) as outer, exchange_deadline(time.monotonic() + 60.0) as inner:
        assert inner.ends == outer.ends
