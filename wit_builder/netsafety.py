"""Which network addresses a crawler may connect to, and a DNS cache that checks every address it hands out.

A crawler on a cloud worker must never reach its own metadata server (169.254.169.254) or the private
network it runs in, whatever a URL or a redirect says. The check runs on the address actually connected to
(see ``wit_builder.http_client``), so DNS rebinding between check and connect cannot slip through.

Policy:
- always refused: multicast, unspecified (0.0.0.0, ::), reserved and other non-global special ranges;
- refused unless ``allow_private`` (``--allow-private-networks``): loopback, private (RFC 1918, ULA fc00::/7),
  shared address space (100.64/10);
- refused unless ``allow_link_local`` (``--allow-link-local``, separate on purpose): link-local 169.254/16
  and fe80::/10, which hold cloud metadata servers. Tests that serve from 127.0.0.1 allow private networks
  but still see metadata addresses refused.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedAddressError(Exception):
    """A host resolved to an address the policy refuses; raised before any connection is made."""


@dataclass(frozen=True)
class AddressPolicy:
    allow_private: bool = False
    allow_link_local: bool = False

    def refusal(self, address: str) -> str | None:
        """Why ``address`` may not be connected to, or None when it may."""
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_link_local:
            return None if self.allow_link_local else f"link-local address {ip} (cloud metadata range)"
        if ip.is_multicast:
            return f"multicast address {ip}"
        if ip.is_unspecified:
            return f"unspecified address {ip}"
        if ip.is_loopback:
            return None if self.allow_private else f"loopback address {ip}"
        if ip.is_private or (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED_SPACE):
            # is_private also covers reserved/documentation ranges; name those separately.
            if ip.is_reserved or any(ip in net for net in _ALWAYS_REFUSED):
                return f"reserved address {ip}"
            return None if self.allow_private else f"private address {ip}"
        if ip.is_reserved or not ip.is_global:
            return f"reserved address {ip}"
        return None


_SHARED_SPACE = ipaddress.ip_network("100.64.0.0/10")
# Special-purpose ranges that is_private includes but that no real host serves from.
_ALWAYS_REFUSED = [
    ipaddress.ip_network(n)
    for n in ("0.0.0.0/8", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
              "240.0.0.0/4", "255.255.255.255/32", "2001:db8::/32", "100::/64")
]

AddrInfo = tuple[int, int, int, str, tuple]


class DnsCache:
    """getaddrinfo with a per-process TTL cache (the OS resolver caches little; crawls hit few hosts often).

    ``resolve`` returns only addresses the policy allows and raises BlockedAddressError when none is left.
    """

    def __init__(self, policy: AddressPolicy, ttl_s: float = 300.0) -> None:
        self.policy = policy
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int], tuple[float, list[AddrInfo]]] = {}

    def resolve(self, host: str, port: int) -> list[AddrInfo]:
        infos = self._lookup(host, port)
        allowed, refusals = [], []
        for info in infos:
            reason = self.policy.refusal(info[4][0])
            if reason is None:
                allowed.append(info)
            else:
                refusals.append(reason)
        if not allowed:
            raise BlockedAddressError(f"refused to connect to {host}: {refusals[0]}")
        return allowed

    def _lookup(self, host: str, port: int) -> list[AddrInfo]:
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get((host, port))
        if hit and hit[0] > now:
            return hit[1]
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        with self._lock:
            self._entries[(host, port)] = (now + self.ttl_s, infos)
        return infos
