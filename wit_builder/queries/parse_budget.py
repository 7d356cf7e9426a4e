"""Parse wikitext under a per-page time and memory budget, in a helper process that can be killed.

mwparserfromhell's C tokenizer backtracks on nested unclosed constructs: a 44 KB page of ``{{a|[[b|<i>``
repeated takes over a minute and the time grows quadratically with the page. The tokenizer is one C call, so
nothing inside the calling process can stop it: a signal-based alarm only works in the main thread (Beam
runs DoFns in worker threads) and a time check in our renderer comes too late (the time is spent before the
first token is returned). So ``BoundedParser`` runs ``wikitext.parse_article`` in a child Python process
(``python -m wit_builder.queries.parse_budget``, started once and reused for every page) and waits for the answer
with ``select`` for at most ``seconds``; a page over the budget gets its child killed and a fresh one started
for the next page, and the page is reported as ``ParseTimeout``. The child also runs under an address-space
limit (``RLIMIT_AS``, ``memory_bytes``): a page that would need more memory fails with ``WikitextError``
instead of taking the worker down. This works the same in any thread, in Beam's SDK workers and on Dataflow.

Cost: the page and its plain text cross a pipe (pickled), a few percent of the parse time; the child's CPU is
the parse itself. Protocol: each message is a 4-byte big-endian length followed by a pickle; requests are the
wikitext, answers ``("ok", text, links, disambiguation)`` or ``("error", message)``.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import struct
import subprocess
import sys
import time
from typing import IO, Any

from wit_builder.queries.wikitext import Article, Site, WikitextError, parse_article

DEFAULT_PARSE_SECONDS = 5.0
DEFAULT_PARSE_MEMORY_BYTES = 2 << 30
MIN_PARSE_MEMORY_BYTES = 64 << 20  # the lowest address-space limit a parser process is given
START_SECONDS = 120.0  # for the helper to import the parser and say it is ready (not part of any page's budget)
_HEADER = struct.Struct(">I")


class ParseTimeout(WikitextError):
    """The page's parse ran past the time budget."""


class BoundedParser:
    """``parse_article`` with a time budget per page (``seconds``) and a memory limit (``memory_bytes``).

    ``seconds`` <= 0 parses in this process, unbounded (for benchmarks and tools that do not need it).
    Raises ``ParseTimeout`` for a page over the budget and ``WikitextError`` for a page the parser rejects or
    that exceeds the memory limit. Not thread-safe: one per DoFn instance. Use as a context manager or call
    ``close``.
    """

    def __init__(self, seconds: float = DEFAULT_PARSE_SECONDS,
                 memory_bytes: int = DEFAULT_PARSE_MEMORY_BYTES, site: Site | None = None) -> None:
        if memory_bytes < MIN_PARSE_MEMORY_BYTES:
            raise ValueError(f"parse memory limit must be >= {MIN_PARSE_MEMORY_BYTES >> 20} MiB, "
                             f"got {memory_bytes} bytes")
        self.seconds = seconds
        self.memory_bytes = memory_bytes
        self.site = site  # the wiki's language rules (wikitext.site_rules); None: English Wikipedia's
        self._child: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BoundedParser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def parse(self, wikitext: str) -> Article:
        """The page's plain text, links and disambiguation flag (``wikitext.parse_article``'s answer).

        Raises ``ParseTimeout`` after ``seconds`` of wall time, ``WikitextError`` when the parser rejects the
        page, the helper dies on it (memory limit) or the helper does not start within ``START_SECONDS``.
        """
        if self.seconds <= 0:
            return parse_article(wikitext, self.site)
        child = self._child if self._child is not None and self._child.poll() is None else self._start()
        stdin, stdout = _pipes(child)
        try:
            _write(stdin, wikitext)
            answer = _read_until(stdout, time.monotonic() + self.seconds)
        except (BrokenPipeError, EOFError, OSError) as err:
            self._kill()
            raise WikitextError(f"the parser process died on this page (memory limit "
                                f"{self.memory_bytes >> 20} MiB?): {err}") from err
        if answer is None:
            self._kill()
            raise ParseTimeout(f"parsing took more than the {self.seconds:g} s budget per page")
        if answer[0] == "ok":
            return Article(answer[1], answer[2], answer[3])
        raise WikitextError(answer[1])

    @property
    def pid(self) -> int | None:
        """The helper process's id while it runs (for CPU accounting in benchmarks), else None."""
        return self._child.pid if self._child is not None and self._child.poll() is None else None

    def close(self) -> None:
        """Ends the helper process (closing its input, killing it after 5 s); a later ``parse`` starts a new one."""
        child, self._child = self._child, None
        if child is not None and child.poll() is None:
            _pipes(child)[0].close()  # the child exits at end of input
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def _start(self) -> subprocess.Popen[bytes]:
        self._kill()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._child = subprocess.Popen(
            [sys.executable, "-m", "wit_builder.queries.parse_budget", str(self.memory_bytes)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
        try:  # wait until it is ready, so that its start-up does not count against the next page's budget
            ready = _read_until(_pipes(self._child)[1], time.monotonic() + START_SECONDS)
        except (EOFError, OSError):
            ready = None
        if ready != "ready":
            self._kill()
            raise WikitextError(f"the parser helper process did not start within {START_SECONDS:g} s")
        _write(_pipes(self._child)[0], self.site)  # the child's first message: the rules of every page after
        return self._child

    def _kill(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.kill()
            child.wait()
            for pipe in (child.stdin, child.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()


def _pipes(child: subprocess.Popen[bytes]) -> tuple[IO[bytes], IO[bytes]]:
    """The helper's (stdin, stdout); both exist because ``_start`` opens them with ``subprocess.PIPE``."""
    if child.stdin is None or child.stdout is None:
        raise WikitextError("the parser helper process has no pipes (started without subprocess.PIPE)")
    return child.stdin, child.stdout


def _write(pipe: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.write(_HEADER.pack(len(data)) + data)
    pipe.flush()


def _read_exact(pipe: IO[bytes], n: int, deadline: float) -> bytes | None:
    """``n`` bytes from ``pipe``; None when ``deadline`` (monotonic) passes first. Raises EOFError at the end."""
    fd, chunks, left = pipe.fileno(), [], n
    while left:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return None
        chunk = os.read(fd, left)  # unbuffered: what select saw is what read gets
        if not chunk:
            raise EOFError("the parser process closed its output")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_blocking(pipe: IO[bytes], n: int) -> bytes:
    """``n`` bytes from ``pipe``, waiting as long as it takes. Raises EOFError at the end."""
    chunks, left = [], n
    while left:
        chunk = pipe.read(left)
        if not chunk:
            raise EOFError("the parser process closed its output")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_until(pipe: IO[bytes], deadline: float) -> Any:
    """The next unpickled message, or None when ``deadline`` (monotonic seconds) passes first."""
    header = _read_exact(pipe, _HEADER.size, deadline)
    if header is None:
        return None
    body = _read_exact(pipe, _HEADER.unpack(header)[0], deadline)
    return None if body is None else pickle.loads(body)


def _serve(memory_bytes: int) -> None:
    """The child: parse each wikitext read from stdin, answer on stdout, exit at end of input."""
    import resource

    with contextlib.suppress(ValueError, OSError):  # a hard limit below ours already bounds it
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    _write(stdout, "ready")
    try:
        site = pickle.loads(_read_blocking(stdin, _HEADER.unpack(_read_blocking(stdin, _HEADER.size))[0]))
    except EOFError:
        return
    while True:
        try:
            header = _read_blocking(stdin, _HEADER.size)
        except EOFError:
            return
        wikitext = pickle.loads(_read_blocking(stdin, _HEADER.unpack(header)[0]))
        answer: tuple[str, str] | tuple[str, str, tuple[str, ...], bool]
        try:
            article = parse_article(wikitext, site)
            answer = ("ok", article.text, article.links, article.disambiguation)
        except MemoryError:
            answer = ("error", f"parsing needed more than the {memory_bytes >> 20} MiB memory limit")
        except WikitextError as err:
            answer = ("error", str(err))
        _write(stdout, answer)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
