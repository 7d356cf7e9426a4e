"""The progress reporter every long stage uses: periodic plain lines off a terminal, a bar on one, one summary."""

from __future__ import annotations

import io
import threading

import pytest

from wit_builder.core import progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_come_every_interval_with_rate_and_shares():
    clock, lines = Clock(), []
    p = progress.Progress("download", "rows", every_s=10, tty=False, clock=clock, emit=lines.append)
    p.add(40, success=30)
    assert lines == []  # not yet ten seconds
    clock.now += 10
    p.add(60, success=63)
    assert lines == ["download: 100 rows, 10.0 rows/s, success 93.0%"]
    clock.now += 5
    p.add(10)
    assert len(lines) == 1
    p.close()
    assert lines[-1] == "download: 110 rows, 7.3 rows/s, success 84.5%"


def test_threads_share_one_reporter_and_lose_no_count():
    r = progress.reporter("test-stage", "records")
    assert progress.reporter("test-stage", "records") is r
    threads = [threading.Thread(target=lambda: [r.add(1) for _ in range(1000)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert r.count == 4000
    progress.close_all()
    assert progress.reporter("test-stage", "records") is not r


def test_a_terminal_gets_a_tqdm_bar(monkeypatch):
    tqdm = pytest.importorskip("tqdm")
    stream = io.StringIO()
    monkeypatch.setattr(progress.sys, "stderr", stream)
    p = progress.Progress("finalize", "rows", tty=True)
    assert isinstance(p._bar, tqdm.tqdm)
    p.add(5, success=5)
    assert p._bar.n == 5 and "success 100.0%" in str(p._bar)
    p.close()
    assert "finalize: 0 rows" in stream.getvalue() and p._bar is None


def test_summary_line_is_one_format():
    assert progress.summary_line("build-pairs", ["10 records -> 3 kept", "", "1 bad record"], 2.345, "out/p") == (
        "wit build-pairs: 10 records -> 3 kept; 1 bad record; 2.3 s -> out/p")
    with pytest.raises(ValueError):
        progress.Progress("x", "y", every_s=0)
