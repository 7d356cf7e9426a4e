"""Per-host politeness: at most N requests in flight and at most R request starts per second per host, a
host-wide pause when a server says ``Retry-After`` (so the other threads stop hammering it too), and an
adaptive spacing between request starts (AIMD): doubled on every 429/503, shrunk a little on every success,
so a worker settles near the rate a throttling host accepts instead of bursting into it after each pause
(additive-increase/multiplicative-decrease as in TCP congestion control, RFC 5681, applied to the spacing)."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

MIN_INTERVAL_S = 0.01  # first spacing after a throttle: 100 starts/s
MAX_INTERVAL_S = 10.0
RECOVERY = 0.93        # per success: about 10 successes to halve the spacing again
THROTTLE_WINDOW_S = 1.0


class _Host:
    def __init__(self, concurrency: int) -> None:
        self.slots = threading.BoundedSemaphore(concurrency)
        self.lock = threading.Lock()
        self.next_start = 0.0  # monotonic time before which no request may start
        self.interval = 0.0    # learned spacing between request starts, on top of the configured rate
        self.widened_at = -math.inf  # when the spacing last widened
        self.starts: deque[float] = deque(maxlen=4096)  # recent start times, to measure the actual rate


class HostLimiter:
    """Thread-safe per-host concurrency cap, request-rate cap and back-off pauses.

    ``concurrency``: requests in flight per host (>= 1); ``rate``: request starts per second per host (0 =
    unlimited). ``clock`` (monotonic seconds) and ``sleep`` are injectable for tests. Raises ValueError for
    values out of range.
    """

    def __init__(self, concurrency: int, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
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
                state.next_start = start + max(self.interval, state.interval)
                state.starts.append(start)
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

    def throttled(self, host: str) -> None:
        """The host said "too many" (429/503): halve the rate of request starts to it.

        Halves the rate actually used over the last THROTTLE_WINDOW_S (or the learned one, if lower), at most
        once per window: the refusals of one burst of in-flight requests are one signal.
        """
        state = self._host(host)
        with state.lock:
            now = self._clock()
            if now - state.widened_at < THROTTLE_WINDOW_S:
                return
            state.widened_at = now
            recent = sum(1 for t in state.starts if now - t <= THROTTLE_WINDOW_S)
            measured = THROTTLE_WINDOW_S / recent if recent else 0.0
            state.interval = min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, 2 * state.interval, 2 * measured))

    def succeeded(self, host: str) -> None:
        """A request to ``host`` succeeded: shrink the learned spacing by ``RECOVERY`` (to 0 below the minimum)."""
        state = self._host(host)
        if state.interval:
            with state.lock:
                state.interval = 0.0 if state.interval < MIN_INTERVAL_S else state.interval * RECOVERY
