"""Per-host concurrency, rate, pauses and AIMD spacing on a fake clock (wit_builder.download.ratelimit)."""

from __future__ import annotations

import pytest

from wit_builder.download.ratelimit import HostLimiter


def test_host_limiter_rate_and_pause():
    clock, sleeps = [0.0], []

    def sleep(s):
        sleeps.append(s)
        clock[0] += s

    limiter = HostLimiter(4, rate=2.0, clock=lambda: clock[0], sleep=sleep)
    for _ in range(3):
        with limiter.slot("h"):
            pass
    assert sleeps == [0.5, 0.5]  # 2 requests per second
    limiter.pause("h", 10.0)
    with limiter.slot("h"):
        pass
    assert sleeps[-1] == pytest.approx(10.0)  # the whole host waits out a Retry-After


def test_host_limiter_backs_off_on_throttling_and_recovers():
    clock, sleeps = [0.0], []

    def sleep(s):
        sleeps.append(s)
        clock[0] += s

    limiter = HostLimiter(4, rate=0, clock=lambda: clock[0], sleep=sleep)
    for _ in range(4):
        limiter.throttled("h")
        limiter.throttled("h")  # one burst of refusals counts once
        clock[0] += 1.0
    for _ in range(3):
        with limiter.slot("h"):
            pass
    assert sleeps == [pytest.approx(0.08)] * 2  # spacing 0.01 doubled three times
    for _ in range(200):
        limiter.succeeded("h")
    clock[0] += 1.0
    sleeps.clear()
    for _ in range(3):
        with limiter.slot("h"):
            pass
    assert sleeps == []  # recovered: no spacing again
