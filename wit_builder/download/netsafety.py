"""Which network addresses a crawler may connect to, and a DNS cache that checks every address it hands out.

A crawler on a cloud worker must never reach its own metadata server (169.254.169.254) or the private
network it runs in, whatever a URL or a redirect says. The check runs on the address actually connected to
(see ``wit_builder.download.http_client``), so DNS rebinding between check and connect cannot slip through.

Policy, consulted in this order for every address (``AddressPolicy.refusal``):
1. Unwrap the IPv6 forms that carry an IPv4 address (IPv4-mapped ::ffff:0:0/96, SIIT ::ffff:0:0:0/96, NAT64
   64:ff9b::/96 (RFC 6052), 6to4 2002::/16 (RFC 3056), Teredo 2001::/32 (RFC 4380, server and client)):
   the embedded IPv4 addresses are judged instead, so no translation form reaches a refused IPv4 range.
2. Always refused, whatever the flags (``ALWAYS_REFUSED``, from IANA's IPv4 and IPv6 special-purpose address
   registries, plus multicast and the deprecated ranges): "this network", the IETF protocol assignments
   192.0.0.0/24 (192.0.0.8 dummy, 192.0.0.192 Oracle Cloud metadata, ...), documentation, benchmarking,
   reserved, broadcast, the 6to4 relay anycast, IPv4-compatible ::a.b.c.d, local-use NAT64 64:ff9b:1::/48,
   discard-only 100::/64, the rest of 2001::/23, 3fff::/20, SRv6 5f00::/16, site-local fec0::/10, multicast.
3. Cloud metadata endpoints (``METADATA_ENDPOINTS``: 169.254.169.254, 169.254.170.2, 100.100.100.200,
   fd00:ec2::254, 168.63.129.16, ...) and the rest of link-local (169.254/16, fe80::/10): refused unless
   ``allow_link_local`` (``--allow-link-local``), a flag of their own on purpose.
4. Loopback, private (RFC 1918, ULA fc00::/7) and shared address space (100.64/10): refused unless
   ``allow_private`` (``--allow-private-networks``, for test servers and intranet mirrors). It never opens a
   metadata endpoint nor anything of step 2.
5. Anything else that is not globally reachable (Python's ``is_global``) is refused as reserved.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from wit_builder.core.errors import WitError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedAddressError(WitError):
    """A host resolved to an address the policy refuses; raised before any connection is made (the row ends
    ``blocked``, naming the address)."""


def _nets(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# IANA IPv4 / IPv6 Special-Purpose Address Registries (entries not globally reachable and of no use to a
# crawler), multicast, and deprecated ranges. Loopback, private, shared and link-local are flag-controlled.
ALWAYS_REFUSED = _nets(
    "0.0.0.0/8", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
    "::/128", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20", "5f00::/16",
    "fec0::/10", "ff00::/8",
)
# Cloud instance metadata / host services: AWS (IMDS, ECS task metadata, IMDS over IPv6, DNS, NTP), GCP, Azure
# (IMDS, wireserver), Oracle, Alibaba, Tencent, ... Most sit in link-local; some in shared or private space.
METADATA_ENDPOINTS = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.169.253", "169.254.169.123", "169.254.0.23",
    "100.100.100.200", "168.63.129.16", "192.0.0.192", "fd00:ec2::254", "fd00:ec2::23", "fd00:ec2::123",
))
LINK_LOCAL = _nets("169.254.0.0/16", "fe80::/10")
LOOPBACK = _nets("127.0.0.0/8", "::1/128")
PRIVATE = _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 transition form carries (mapped, SIIT, NAT64, 6to4, Teredo); [] for none."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in _SIIT or ip in _NAT64:
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)
    return []


@dataclass(frozen=True)
class AddressPolicy:
    """The connect policy of the module docstring, with its two opt-in flags."""

    allow_private: bool = False
    allow_link_local: bool = False

    def refusal(self, address: str) -> str | None:
        """Why ``address`` (IPv4/IPv6 text, an IPv6 ``%zone`` ignored) may not be connected to, or None when it
        may (rules in the module docstring). Raises ValueError for text that is not an IP address."""
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address):
            inner = embedded_ipv4(ip)
            if inner:
                for v4 in inner:
                    reason = self.refusal(str(v4))
                    if reason is not None:
                        return f"{ip} embeds {reason}"
                return None
        return self._refusal(ip)

    def _refusal(self, ip: IPAddress) -> str | None:
        if isinstance(ip, ipaddress.IPv6Address) and 1 < int(ip) < 1 << 32:
            return f"IPv4-compatible address {ip} (deprecated form, always refused)"
        if any(ip in net for net in ALWAYS_REFUSED):
            kind = "multicast" if ip.is_multicast else "special-purpose"
            return f"{kind} address {ip} (always refused)"
        if ip in METADATA_ENDPOINTS:
            return None if self.allow_link_local else f"cloud metadata address {ip} (needs --allow-link-local)"
        if any(ip in net for net in LINK_LOCAL):
            return None if self.allow_link_local else f"link-local address {ip} (cloud metadata range)"
        if any(ip in net for net in LOOPBACK):
            return None if self.allow_private else f"loopback address {ip}"
        if any(ip in net for net in PRIVATE):
            return None if self.allow_private else f"private address {ip}"
        if not ip.is_global:
            return f"reserved address {ip}"
        return None


# One socket.getaddrinfo answer: (family, type, proto, canonname, sockaddr); sockaddr[0] is the IP as text.
AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str,
                 tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]]


class DnsCache:
    """getaddrinfo with a per-process TTL cache (the OS resolver caches little; crawls hit few hosts often).

    ``resolve`` returns only addresses the policy allows and raises BlockedAddressError when none is left.
    """

    def __init__(self, policy: AddressPolicy, ttl_s: float = 300.0) -> None:
        self.policy = policy
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int], tuple[float, Sequence[AddrInfo]]] = {}

    def resolve(self, host: str, port: int) -> list[AddrInfo]:
        """The allowed TCP addresses of ``host``:``port`` (getaddrinfo order). Raises BlockedAddressError when
        every address is refused, socket.gaierror (an OSError) when the name does not resolve."""
        infos = self._lookup(host, port)
        allowed, refusals = [], []
        for info in infos:
            reason = self.policy.refusal(str(info[4][0]))  # str already for AF_INET/AF_INET6
            if reason is None:
                allowed.append(info)
            else:
                refusals.append(reason)
        if not allowed:
            raise BlockedAddressError(f"refused to connect to {host}: {refusals[0]}")
        return allowed

    def _lookup(self, host: str, port: int) -> Sequence[AddrInfo]:
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get((host, port))
        if hit and hit[0] > now:
            return hit[1]
        infos: Sequence[AddrInfo] = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        with self._lock:
            self._entries[(host, port)] = (now + self.ttl_s, infos)
        return infos
