"""Per-host politeness: at most N requests in flight and at most R request starts per second per host, and a
host-wide pause when a server says ``Retry-After`` (so the other threads stop hammering it too)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator


class _Host:
    def __init__(self, concurrency: int) -> None:
        self.slots = threading.BoundedSemaphore(concurrency)
        self.lock = threading.Lock()
        self.next_start = 0.0  # monotonic time before which no request may start


class HostLimiter:
    """Thread-safe per-host concurrency cap, request-rate cap and back-off pauses.

    ``rate`` is requests per second per host (0 = unlimited).
    """

    def __init__(self, concurrency: int, rate: float, clock=time.monotonic, sleep=time.sleep) -> None:
        if concurrency < 1:
            raise ValueError(f"per-host concurrency must be >= 1, got {concurrency}")
        if rate < 0:
            raise ValueError(f"per-host rate must be >= 0, got {rate}")
        self.concurrency = concurrency
        self.interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._hosts: dict[str, _Host] = {}

    def _host(self, host: str) -> _Host:
        with self._lock:
            state = self._hosts.get(host)
            if state is None:
                state = self._hosts[host] = _Host(self.concurrency)
            return state

    @contextlib.contextmanager
    def slot(self, host: str) -> Iterator[None]:
        """Hold one of the host's slots, started no earlier than its rate and pauses allow.

        Waiting here is politeness, not slowness of the server: callers start their deadlines after it.
        """
        state = self._host(host)
        state.slots.acquire()
        try:
            with state.lock:
                start = max(self._clock(), state.next_start)
                state.next_start = start + self.interval
            wait = start - self._clock()
            if wait > 0:
                self._sleep(wait)
            yield
        finally:
            state.slots.release()

    def pause(self, host: str, seconds: float) -> None:
        """Start no new request to ``host`` for ``seconds`` (a 429/503 with Retry-After)."""
        state = self._host(host)
        with state.lock:
            state.next_start = max(state.next_start, self._clock() + seconds)
