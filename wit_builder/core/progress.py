"""Progress of a long stage: a live bar on a terminal, plain periodic log lines otherwise, one summary format.

A stage hooks in with one line where it finishes a unit of work, e.g. in a DoFn::

    progress.reporter("download", "rows").add(len(rows), success=n_ok)

Every DoFn instance and thread of one process shares the reporter of a (stage, unit), so a worker shows one
bar or one stream of lines. On a terminal (stderr is a TTY) and with tqdm installed the bar is tqdm's; elsewhere
(Beam workers, CI, log files) a line like ``download: 12,000 rows, 41.3 rows/s, success 93.1%`` is logged every
``every_s`` seconds (logger ``wit.progress``, INFO) and once when the process ends.

:func:`summary_line` is the one format of the line every stage prints when it is done.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

LOG = logging.getLogger("wit.progress")
EVERY_S = 30.0  # seconds between plain progress lines


class Progress:
    """Thread-safe counts of one kind of work (``unit``) with named parts shown as shares of the total."""

    def __init__(self, stage: str, unit: str, *, every_s: float = EVERY_S, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, emit: Callable[[str], None] | None = None) -> None:
        if every_s <= 0:
            raise ValueError(f"every_s must be > 0, got {every_s}")
        self.stage, self.unit, self.every_s = stage, unit, every_s
        self._clock = clock
        self._emit = emit or LOG.info
        self._lock = threading.Lock()
        self._started = clock()
        self._last = self._started
        self.count = 0
        self.parts: dict[str, int] = {}
        self._bar: Any = None
        if tty if tty is not None else _stderr_is_tty():
            self._bar = _tqdm_bar(f"{stage}", unit)

    def add(self, n: int = 1, **parts: int) -> None:
        """Count ``n`` units; ``parts`` (e.g. ``success=3``) are counted too and shown as shares of all units."""
        with self._lock:
            self.count += n
            for name, k in parts.items():
                self.parts[name] = self.parts.get(name, 0) + k
            if self._bar is not None:
                self._bar.update(n)
                if self.parts:
                    self._bar.set_postfix_str(self._shares(), refresh=False)
                return
            now = self._clock()
            if now - self._last >= self.every_s:
                self._last = now
                line = self.line(now)
            else:
                return
        self._emit(line)

    def _shares(self) -> str:
        return ", ".join(f"{name} {100 * k / max(self.count, 1):.1f}%" for name, k in self.parts.items())

    def line(self, now: float | None = None) -> str:
        """``stage: N units, R units/s[, part P%...]``."""
        elapsed = max((self._clock() if now is None else now) - self._started, 1e-9)
        text = f"{self.stage}: {self.count:,} {self.unit}, {self.count / elapsed:.1f} {self.unit}/s"
        return text + (f", {self._shares()}" if self.parts else "")

    def close(self) -> None:
        """End the bar, or log the last plain line (when anything was counted)."""
        with self._lock:
            bar, self._bar = self._bar, None
        if bar is not None:
            bar.close()
        elif self.count:
            self._emit(self.line())


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _tqdm_bar(desc: str, unit: str) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with the train extra; plain lines otherwise
        return None
    return tqdm(desc=desc, unit=f" {unit}", dynamic_ncols=True, leave=False, file=sys.stderr)


_REPORTERS: dict[tuple[str, str], Progress] = {}
_REPORTERS_LOCK = threading.Lock()


def reporter(stage: str, unit: str) -> Progress:
    """The process-wide reporter of ``(stage, unit)``, created on first use and closed when the process ends."""
    key = (stage, unit)
    with _REPORTERS_LOCK:
        if key not in _REPORTERS:
            _REPORTERS[key] = Progress(stage, unit)
        return _REPORTERS[key]


def close_all() -> None:
    """Close every reporter of this process (the launcher calls it when a stage ends)."""
    with _REPORTERS_LOCK:
        reporters = list(_REPORTERS.values())
        _REPORTERS.clear()
    for r in reporters:
        r.close()


atexit.register(close_all)


def summary_line(stage: str, parts: Iterable[str], seconds: float, out: str | None = None) -> str:
    """The one end-of-stage line: ``wit STAGE: part; part; 12.3 s -> OUT``."""
    text = "; ".join(p for p in parts if p)
    return f"wit {stage}: {text}; {seconds:.1f} s" + (f" -> {out}" if out else "")
