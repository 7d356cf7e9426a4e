"""A requests Session whose every connection goes through the address policy and the DNS cache.

urllib3 opens sockets in ``HTTPConnection._new_conn``; the subclasses below resolve the host through
``DnsCache.resolve`` (which drops refused addresses) and connect to the checked address itself. TLS still
verifies the certificate against the host name, connections are pooled per host (keep-alive), and proxies
from the environment are ignored (a proxy would connect on our behalf, past the check).

Socket timeouts bound each wait for one read, not an exchange: a server that trickles its status line or
headers a byte a second never trips them. ``exchange_deadline(ends)`` bounds everything a thread does in its
block: every socket that block connects or reuses is shut down by a watchdog thread when the monotonic time
``ends`` passes, so the blocked read returns at once and the caller reports the deadline. (A TLS handshake in
progress is bounded by the per-read timeout only: its socket is not reachable until the handshake ends.)
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from wit_builder.download.netsafety import DnsCache


class _Watchdog:
    """One daemon thread that calls each armed ``kill`` when its monotonic deadline passes, unless disarmed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._kills: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, ends: float, kill: Callable[[], None]) -> int:
        with self._cond:
            token = next(self._ids)
            self._kills[token] = kill
            heapq.heappush(self._heap, (ends, token))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="deadline-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._kills.pop(token, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][1] not in self._kills:
                    heapq.heappop(self._heap)  # disarmed
                now = time.monotonic()
                if not self._heap or self._heap[0][0] > now:
                    self._cond.wait(None if not self._heap else self._heap[0][0] - now)
                    continue
                _, token = heapq.heappop(self._heap)
                kill = self._kills.pop(token)
            with contextlib.suppress(OSError):
                kill()


_WATCHDOG = _Watchdog()
_scope = threading.local()


class ExchangeScope:
    """The deadline of the current thread's exchange; ``expired`` once the watchdog cut a socket of it."""

    def __init__(self, ends: float) -> None:
        self.ends = ends
        self.tokens: list[int] = []
        self.expired = False

    def watch(self, conn: HTTPConnection, raw: socket.socket | None = None) -> None:
        """Shut down ``conn``'s socket (or ``raw`` while it connects) at the deadline; TimeoutError if it passed."""

        def kill() -> None:
            self.expired = True
            sock = getattr(conn, "sock", None) or raw
            if sock is not None and sock.fileno() != -1:
                sock.shutdown(socket.SHUT_RDWR)

        if time.monotonic() >= self.ends:
            self.expired = True
            raise TimeoutError("deadline exceeded")
        self.tokens.append(_WATCHDOG.arm(self.ends, kill))


@contextlib.contextmanager
def exchange_deadline(ends: float) -> Iterator[ExchangeScope]:
    """Bound every socket wait in the block (connect, status line, headers, body) by monotonic time ``ends``."""
    outer = getattr(_scope, "current", None)
    scope = ExchangeScope(ends if outer is None else min(ends, outer.ends))
    _scope.current = scope
    try:
        yield scope
    finally:
        _scope.current = outer
        for token in scope.tokens:
            _WATCHDOG.disarm(token)


def _watch(conn: HTTPConnection, raw: socket.socket | None = None) -> None:
    scope = getattr(_scope, "current", None)
    if scope is not None:
        scope.watch(conn, raw)


def _connect(conn: HTTPConnection, dns: DnsCache) -> socket.socket:
    """Connect to the first allowed address of ``conn.host`` that answers (BlockedAddressError propagates)."""
    last_error: OSError | None = None
    for family, socktype, proto, _, sockaddr in dns.resolve(conn._dns_host, conn.port):
        sock = socket.socket(family, socktype, proto)
        try:
            _watch(conn, sock)
            for option in conn.socket_options or ():
                sock.setsockopt(*option)
            if conn.timeout is not None:
                sock.settimeout(conn.timeout)
            sock.connect(sockaddr)
            return sock
        except TimeoutError as e:
            sock.close()
            raise ConnectTimeoutError(conn, f"connection to {conn.host} timed out") from e
        except OSError as e:
            sock.close()
            last_error = e
    raise NewConnectionError(conn, f"failed to connect to {conn.host}: {last_error}")


def _pool_classes(dns: DnsCache) -> dict[str, type[HTTPConnectionPool]]:
    class GuardedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return _connect(self, dns)

        def request(self, *args, **kwargs) -> None:
            if self.sock is not None:  # a pooled keep-alive connection: watch it for this exchange too
                _watch(self)
            super().request(*args, **kwargs)

    class GuardedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return _connect(self, dns)

        def request(self, *args, **kwargs) -> None:
            if self.sock is not None:
                _watch(self)
            super().request(*args, **kwargs)

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    return {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}


class GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter (no automatic retries: the fetcher decides) whose pools use guarded connections."""

    def __init__(self, dns: DnsCache, pool_maxsize: int) -> None:
        self._dns = dns
        super().__init__(pool_connections=64, pool_maxsize=pool_maxsize, max_retries=0, pool_block=False)

    def init_poolmanager(self, *args, **kwargs) -> None:
        """requests' hook: build the pool manager, then swap its pool classes for the guarded ones."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self._dns)


def guarded_session(dns: DnsCache, user_agent: str, pool_maxsize: int) -> requests.Session:
    """A Session for http(s) whose connections go through ``dns`` (refused addresses raise BlockedAddressError
    at connect), ignoring proxies and .netrc, keeping up to ``pool_maxsize`` connections per host, no retries."""
    session = requests.Session()
    session.trust_env = False  # no proxies or .netrc from the environment
    adapter = GuardedAdapter(dns, pool_maxsize)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"User-Agent": user_agent, "Accept": "image/*,*/*;q=0.5"})
    return session
