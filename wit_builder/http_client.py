"""A requests Session whose every connection goes through the address policy and the DNS cache.

urllib3 opens sockets in ``HTTPConnection._new_conn``; the subclasses below resolve the host through
``DnsCache.resolve`` (which drops refused addresses) and connect to the checked address itself. TLS still
verifies the certificate against the host name, connections are pooled per host (keep-alive), and proxies
from the environment are ignored (a proxy would connect on our behalf, past the check).
"""

from __future__ import annotations

import socket

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from wit_builder.netsafety import DnsCache


def _connect(conn: HTTPConnection, dns: DnsCache) -> socket.socket:
    """Connect to the first allowed address of ``conn.host`` that answers (BlockedAddressError propagates)."""
    last_error: OSError | None = None
    for family, socktype, proto, _, sockaddr in dns.resolve(conn._dns_host, conn.port):
        sock = socket.socket(family, socktype, proto)
        try:
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

    class GuardedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return _connect(self, dns)

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
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self._dns)


def guarded_session(dns: DnsCache, user_agent: str, pool_maxsize: int) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxies or .netrc from the environment
    adapter = GuardedAdapter(dns, pool_maxsize)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"User-Agent": user_agent, "Accept": "image/*,*/*;q=0.5"})
    return session
