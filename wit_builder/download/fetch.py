"""Fetch one URL politely and safely: the native download engine's network half.

``Fetcher.fetch(url)`` follows redirects itself (each hop checked for scheme, robots.txt and, at connect
time, the address policy), holds a per-host slot while a request is in flight, reads at most ``max_bytes``
within a total deadline that bounds every wait of the exchange (connect, status line, headers, body: see
``http_client.exchange_deadline``; a trickling server is cut at the deadline and not retried), honours
the opt-outs (robots.txt, ``X-Robots-Tag``, TDMRep's ``/.well-known/tdmrep.json`` and ``tdm-reservation``
header), and retries only transient failures (DNS, timeouts, 408, 429, 5xx) with jittered exponential backoff
that honours ``Retry-After``. It never raises for a bad URL or a hostile server: every outcome is a FetchResult
with a raw status, and a ``blocked`` one names its reason (``BLOCK_REASONS``).

Every body is bounded in bytes before and after decoding (``_read_body``): a declared Content-Length over the
limit is refused unread, the raw bytes read and the decoded bytes are both capped (urllib3 decodes gzip,
deflate, br and zstd at most one read's worth at a time, so a compression bomb never inflates past the cap),
and a redirect's body is never read: robots.txt and tdmrep.json follow their redirects by hand, like images.
"""

from __future__ import annotations

import email.utils
import http.client
import importlib.metadata
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions
from urllib3.exceptions import NameResolutionError

from wit_builder.download.host_shards import host_key
from wit_builder.download.http_client import exchange_deadline, guarded_session
from wit_builder.download.netsafety import AddressPolicy, BlockedAddressError, DnsCache
from wit_builder.download.options import FetchConfig
from wit_builder.download.ratelimit import HostLimiter
from wit_builder.download.raw_shards import BLOCK_REASONS
from wit_builder.download.robots import DEFAULT_OPT_OUTS, MAX_ROBOTS_BYTES, RobotsCache, x_robots_opt_out
from wit_builder.download.tdmrep import MAX_TDMREP_BYTES, POLICY_HEADER, TDM_HEADER, TdmCache, header_reservation

USER_AGENT_TOKEN = "wit-builder"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
THROTTLE_STATUSES = frozenset({429, 503})  # "slow down": the host limiter spaces requests further apart
ORIGIN_FILE_REDIRECTS = 5  # robots.txt and tdmrep.json: RFC 9309 2.3.1.2 follows at least five


def user_agent(contact: str | None) -> str:
    """An honest User-Agent: our name and version, and where a site owner can reach the operator."""
    info = f"+{contact}" if contact else "+https://github.com/openai/CLIP (WIT rebuild)"
    return f"{USER_AGENT_TOKEN}/{_version()} ({info})"


@dataclass(frozen=True)
class FetchResult:
    """One URL's outcome: a raw status, why it failed, the last HTTP status, the body, and attempts made."""

    status: str                  # success | failed_to_download | blocked
    error_message: str | None = None
    http_status: int | None = None
    data: bytes | None = None    # the body on success (at most max_bytes)
    attempts: int = 1
    reason: str | None = None    # blocked: one of BLOCK_REASONS

    def __post_init__(self) -> None:
        if self.reason is not None and self.reason not in BLOCK_REASONS:
            raise ValueError(f"unknown block reason {self.reason!r}")


class _Deadline:
    """A request's total time budget; it starts on the first hop's slot, so waiting politely is free."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._ends: float | None = None

    def ends(self) -> float:
        """The monotonic time the budget runs out; the clock starts on the first call."""
        if self._ends is None:
            self._ends = time.monotonic() + self.seconds
        return self._ends

    def remaining(self) -> float:
        """Seconds left (<= 0 once spent); starts the clock like ``ends``."""
        return self.ends() - time.monotonic()


class _Transient(Exception):
    def __init__(self, message: str, http_status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.retry_after = retry_after


class _Final(Exception):
    def __init__(self, status: str, message: str, http_status: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.http_status = http_status
        self.reason = reason


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date, RFC 9110 10.2.3), or None when
    absent or unparseable; a date in the past gives 0. ``now``: Unix time (default: the clock)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None, rng: random.Random) -> float:
    """Seconds to wait before retry ``attempt`` + 1: full-jitter exponential backoff, uniform in
    [0, min(cap, base * 2**attempt)] (Brooker, "Exponential Backoff And Jitter", AWS 2015), never shorter than the
    server's Retry-After (RFC 9110 10.2.3); both capped at ``cap``."""
    jitter = rng.uniform(0, min(cap, base * (2**attempt)))
    return min(cap, max(jitter, retry_after or 0.0))


class Fetcher:
    """One per worker process: a pooled session, DNS cache, robots cache and host limiter shared by threads."""

    def __init__(self, config: FetchConfig, sleep=time.sleep) -> None:
        self.config = config
        self._sleep = sleep
        self._rng = random.Random()
        policy = AddressPolicy(config.allow_private_networks, config.allow_link_local)
        self.dns = DnsCache(policy)
        # keep-alive connections per host: as many as the limiter lets be in flight at once
        self.session = guarded_session(self.dns, user_agent(config.user_agent_contact), config.per_host_concurrency)
        self.limiter = HostLimiter(config.per_host_concurrency, config.per_host_rate)
        self.robots = (RobotsCache(self._fetch_robots, USER_AGENT_TOKEN, wait_s=config.deadline_s)
                       if config.respect_robots_txt else None)
        self.tdm = TdmCache(self._fetch_tdmrep, wait_s=config.deadline_s) if config.respect_tdmrep else None
        self.session.max_redirects = 0  # every redirect is followed by hand, its body unread

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()

    def fetch(self, url: str) -> FetchResult:
        """Download ``url`` by the rules of the module docstring; never raises for the URL or the server.

        ``blocked``: a refused address or scheme, robots.txt (RFC 9309), an ``X-Robots-Tag`` opt-out or a TDMRep
        reservation, its ``reason`` one of BLOCK_REASONS; ``failed_to_download``: anything else that went wrong,
        after ``retries`` more attempts for transient failures.
        """
        cfg = self.config
        for attempt in range(cfg.retries + 1):
            try:
                data, http_status = self._attempt(url)
                self.limiter.succeeded(_host_key(url))
                return FetchResult("success", None, http_status, data, attempt + 1)
            except _Final as e:
                return FetchResult(e.status, str(e), e.http_status, None, attempt + 1, e.reason)
            except _Transient as e:
                if e.http_status in THROTTLE_STATUSES:
                    self.limiter.throttled(_host_key(url))
                if attempt == cfg.retries:
                    return FetchResult("failed_to_download", str(e), e.http_status, None, attempt + 1)
                delay = backoff_delay(attempt, cfg.backoff_base_s, cfg.backoff_max_s, e.retry_after, self._rng)
                if e.retry_after is not None:
                    self.limiter.pause(_host_key(url), delay)
                self._sleep(delay)
        raise AssertionError("unreachable")

    def _attempt(self, url: str) -> tuple[bytes, int]:
        cfg = self.config
        deadline = _Deadline(cfg.deadline_s)
        seen = {url}
        current = url
        for _ in range(cfg.max_redirects + 1):
            try:
                parts = urlsplit(current)
                parts.port  # noqa: B018 -- raises ValueError on a bad port
            except ValueError as e:
                raise _Final("failed_to_download", f"malformed url {current!r}: {e}") from None
            if parts.scheme not in ("http", "https"):
                raise _Final("blocked", f"scheme {parts.scheme!r} not allowed: {current}", reason="scheme")
            if not parts.hostname:
                raise _Final("failed_to_download", f"no host in url {current!r}")
            refusal = self._opt_out_refusal(current, parts)
            if refusal:
                raise _Final("blocked", refusal[1], reason=refusal[0])
            location = self._request(current, deadline, self._handle)
            if isinstance(location, tuple):
                return location
            if location in seen:
                raise _Final("failed_to_download", f"redirect loop at {location}")
            seen.add(location)
            current = location
        raise _Final("failed_to_download", f"more than {cfg.max_redirects} redirects from {url}")

    def _request(self, url: str, deadline: _Deadline, handle: _Handler) -> str | tuple[bytes, int]:
        """One hop: the next URL for a redirect, or (body, http status), as ``handle`` reads the response."""
        cfg = self.config
        try:
            with self.limiter.slot(_host_key(url)):
                if deadline.remaining() <= 0:
                    raise _Final("failed_to_download",
                                 f"deadline of {cfg.deadline_s}s exceeded before requesting {url}")
                with exchange_deadline(deadline.ends()) as scope:
                    try:
                        return self._exchange(url, deadline, handle)
                    except (_Final, _Transient):
                        raise
                    except Exception:
                        if scope.expired:  # the watchdog cut a trickling connect, status line, header or body
                            raise _Final("failed_to_download",
                                         f"deadline of {cfg.deadline_s}s exceeded fetching {url}") from None
                        raise
        except BlockedAddressError as e:
            raise _Final("blocked", str(e), reason="address") from None
        except requests.Timeout as e:
            raise _Transient(f"timeout fetching {url}: {_root_cause(e)}") from None
        except requests.ConnectionError as e:
            if _caused_by(e, NameResolutionError):
                raise _Transient(f"DNS failure for {url}: {_root_cause(e)}") from None
            if _caused_by(e, BlockedAddressError):
                raise _Final("blocked", str(_root_cause(e)), reason="address") from None
            raise _Final("failed_to_download", f"connection failed for {url}: {_root_cause(e)}") from None
        except requests.RequestException as e:
            raise _Final("failed_to_download", f"{type(e).__name__} for {url}: {_root_cause(e)}") from None
        # The body is read through urllib3 (read1, for the deadline), whose errors requests does not wrap.
        except urllib3.exceptions.ReadTimeoutError as e:
            raise _Transient(f"timeout reading {url}: {e}") from None
        except urllib3.exceptions.HTTPError as e:
            raise _Final("failed_to_download", f"{type(e).__name__} reading {url}: {e}") from None
        except (OSError, ValueError, http.client.HTTPException) as e:  # odd URLs, headers or sockets
            raise _Final("failed_to_download", f"{type(e).__name__} fetching {url}: {e}") from None

    def _exchange(self, url: str, deadline: _Deadline, handle: _Handler) -> str | tuple[bytes, int]:
        remaining = deadline.remaining()
        timeout = (min(self.config.connect_timeout_s, remaining), min(self.config.read_timeout_s, remaining))
        # The adapter directly: Session.send would parse a redirect's Location itself (and raise on non-UTF-8).
        request = self.session.prepare_request(requests.Request("GET", url))
        response = self.session.get_adapter(url).send(request, stream=True, timeout=timeout)
        try:
            return handle(url, response, deadline)
        finally:
            response.close()  # closes the connection when the body was not read whole: nothing is drained

    def _handle(self, url: str, response: requests.Response, deadline: _Deadline) -> str | tuple[bytes, int]:
        """An image hop's response: the redirect target (its body unread), or the body of a 200 after the
        opt-out headers; _Final/_Transient for the rest."""
        cfg = self.config
        code = response.status_code
        if code in REDIRECT_STATUSES and response.headers.get("Location"):
            return redirect_target(url, response.headers["Location"], code)
        headers = response.raw.headers
        if cfg.respect_x_robots_tag:
            opted_out = x_robots_opt_out(headers.getlist("X-Robots-Tag"), USER_AGENT_TOKEN, DEFAULT_OPT_OUTS)
            if opted_out:
                raise _Final("blocked", f"X-Robots-Tag {opted_out} on {url}", code, reason="x_robots_tag")
        if cfg.respect_tdmrep and header_reservation(headers.getlist(TDM_HEADER)) == 1:
            policy = headers.get(POLICY_HEADER)
            raise _Final("blocked", f"tdm-reservation 1 on {url}" + (f" (policy {policy})" if policy else ""), code,
                         reason="tdm_reserved")
        if code in TRANSIENT_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise _Transient(f"HTTP {code} from {url}", code, retry_after)
        if code != 200:
            raise _Final("failed_to_download", f"HTTP {code} from {url}", code)
        return _read_body(response, url, cfg.max_bytes, deadline, truncate=False), code

    def _opt_out_refusal(self, url: str, parts) -> tuple[str, str] | None:
        """(reason, message) when robots.txt or tdmrep.json of ``url``'s origin forbids it; a refused address is
        reported as such (_Final), without fetching either file."""
        if self.robots is None and self.tdm is None:
            return None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            self.dns.resolve(parts.hostname, port)
        except BlockedAddressError as e:
            raise _Final("blocked", str(e), reason="address") from None
        except OSError:
            pass  # DNS failures surface (and are retried) on the request itself
        refusal = self.robots.refusal(url) if self.robots is not None else None
        if refusal is None and self.tdm is not None:
            refusal = self.tdm.refusal(url)
        return refusal

    def _fetch_robots(self, robots_url: str) -> tuple[int | None, bytes]:
        """robots.txt (RFC 9309): its status and at most MAX_ROBOTS_BYTES + 1 bytes of its body."""
        return self._fetch_origin_file(robots_url, MAX_ROBOTS_BYTES + 1)  # + 1: robots_text sees the cut

    def _fetch_tdmrep(self, tdmrep_url: str) -> tuple[int | None, bytes]:
        """``/.well-known/tdmrep.json``: its status and at most MAX_TDMREP_BYTES + 1 bytes of its body."""
        return self._fetch_origin_file(tdmrep_url, MAX_TDMREP_BYTES + 1)  # + 1: a longer file fails to parse

    def _fetch_origin_file(self, url: str, limit: int) -> tuple[int | None, bytes]:
        """(final http status, at most ``limit`` decoded body bytes) of an origin's policy file, through the same
        guarded session (each hop address-checked), within one per-URL deadline, following at most
        ORIGIN_FILE_REDIRECTS redirects by hand without reading their bodies; (None, b"") when it could not be
        fetched (network failure, deadline, blocked address, another scheme, too many redirects or a loop)."""
        deadline = _Deadline(self.config.deadline_s)
        current, seen = url, {url}
        for _ in range(ORIGIN_FILE_REDIRECTS + 1):
            if urlsplit(current).scheme not in ("http", "https"):
                return None, b""
            try:
                hop = self._request(current, deadline, lambda u, r, d: _read_origin_file(u, r, d, limit))
            except (_Final, _Transient):
                return None, b""
            if isinstance(hop, tuple):
                body, code = hop
                return code, body
            if hop in seen:
                return None, b""
            seen.add(hop)
            current = hop
        return None, b""


_Handler = Callable[[str, requests.Response, _Deadline], "str | tuple[bytes, int]"]


def _read_origin_file(url: str, response: requests.Response, deadline: _Deadline,
                      limit: int) -> str | tuple[bytes, int]:
    """A policy file hop: the redirect target (body unread); else (body cut at ``limit`` bytes, status) for 2xx,
    (b"", status) for any other status (its body unread)."""
    code = response.status_code
    if code in REDIRECT_STATUSES and response.headers.get("Location"):
        return redirect_target(url, response.headers["Location"], code)
    if not 200 <= code < 300:
        return b"", code
    return _read_body(response, url, limit, deadline, truncate=True), code


def _read_body(response: requests.Response, url: str, limit: int, deadline: _Deadline, truncate: bool) -> bytes:
    """At most ``limit`` bytes of ``response``'s body, decoded (gzip, deflate, br, zstd), bounded on both sides of
    the decoder: a Content-Length over ``limit``, more than ``limit`` raw bytes or more than ``limit`` decoded
    bytes end the read: ``truncate`` keeps the first ``limit`` decoded bytes, else _Final (the row fails). urllib3
    inflates at most the amount asked for per read, so a compression bomb never holds more than one read."""
    code = response.status_code
    declared = response.headers.get("Content-Length", "")
    if not truncate and declared.isdigit() and int(declared) > limit:
        raise _Final("failed_to_download", f"body of {declared} bytes exceeds max_bytes={limit}", code)
    raw = response.raw
    chunks, size = [], 0
    while chunk := raw.read1(min(1 << 16, limit + 1 - size), decode_content=True):
        size += len(chunk)
        if size > limit or raw.tell() > limit:
            if truncate:
                chunks.append(chunk[: max(0, limit - (size - len(chunk)))])
                break
            side = "decoded" if size > limit else "raw"
            raise _Final("failed_to_download", f"body exceeds max_bytes={limit} ({side}) from {url}", code)
        if deadline.remaining() <= 0:
            raise _Final("failed_to_download", f"deadline of {deadline.seconds}s exceeded reading {url}", code)
        chunks.append(chunk)
    return b"".join(chunks)


def redirect_target(url: str, location: str, code: int) -> str:
    """The absolute URL a redirect points to; a Location that is not UTF-8 or not a URL fails the download.

    http.client decodes header bytes as latin-1, so the original bytes are recovered and decoded as UTF-8
    (RFC 3986 IRIs); anything else is a broken server, not something to guess at.
    """
    try:
        text = location.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise _Final("failed_to_download", f"redirect from {url} has a Location that is not UTF-8: "
                                           f"{location.encode('latin-1', 'replace')[:200]!r}", code) from None
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise _Final("failed_to_download", f"redirect from {url} has control characters in its Location", code)
    try:
        return urljoin(url, text.strip())
    except ValueError as e:
        raise _Final("failed_to_download", f"redirect from {url} has a malformed Location {text[:200]!r}: {e}",
                     code) from None


def _version() -> str:
    try:
        return importlib.metadata.version("wit-builder")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def _host_key(url: str) -> str:
    # The same key the shard planner groups rows by (lower case, no trailing dot): one host, one limiter.
    return host_key(url)


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    seen = set()
    stack: list[BaseException | None] = [error]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kind):
            return True
        stack.extend([e.__cause__, e.__context__, *[a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]])
        reason = getattr(e, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)
    return False


def _root_cause(error: BaseException) -> str:
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]
    reason = getattr(error, "reason", None)
    return str(reason if isinstance(reason, BaseException) else error)
