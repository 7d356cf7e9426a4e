"""The errors a user can fix, and how the ``wit`` launcher recognises them (no traceback for these).

Exit codes of every command (:mod:`wit_builder.cli`): 0 success; 1 the run failed (:class:`StageFailed`, one of
our errors raised while the pipeline ran); 2 bad usage or bad input found before any work (a :class:`UsageError`,
or any other of our errors raised before the run: :func:`wit_builder.beam.launcher.run_stage` turns those into
:class:`UsageError`); 3 the run finished with an empty output (:data:`EXIT_EMPTY`); 130 interrupted (Ctrl-C).

Every error of ours derives from :class:`WitError`; a stage's own classes (``DumpError``, ``RawInputError``, ...)
derive from :class:`InputError` (bad input: the message names the file and the record). A runner may hand an
error back as text only (a worker process's traceback inside a RuntimeError), so the names matched in that
text are derived from the classes (:func:`known_names`), never listed by hand.
"""

from __future__ import annotations

import errno
import re

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# The run finished but its output is empty: its input held no records, or none passed (no candidate matched, no
# row downloaded); the message on stderr says which. Not a success: a script must not go on to the next stage.
EXIT_EMPTY = 3
INTERRUPTED = "interrupted; rerun the same command to resume"

# Python's own errors whose message already names the path (an input removed mid-run): one line, no traceback
KNOWN_BUILTINS: tuple[type[BaseException], ...] = (FileNotFoundError,)
_BEAM_STEP = re.compile(r"\s*\[while running '[^']*'\]\s*$")


class WitError(Exception):
    """Base of the project's user-fixable errors; ``exit_code`` is what the launcher returns."""

    exit_code = EXIT_FAILED


class UsageError(WitError, ValueError):
    """Bad usage or bad input found before any work (exit 2)."""

    exit_code = EXIT_USAGE


class InputError(WitError, ValueError):
    """A bad input file or record; the message names the file and the record (exit 2 before work, 1 during a
    run). Stages derive their own (``DumpError``, ``PoolFormatError``, ``RawInputError``, ``DataError``, ...)."""

    exit_code = EXIT_USAGE


class DiskFull(WitError):
    """A write failed for want of space (``ENOSPC``) or quota (``EDQUOT``); the message names the path (exit 1).
    Nothing half-written stays under a final name (writes are temp-then-rename), so a rerun resumes."""

    exit_code = EXIT_FAILED


def disk_full(path: str, exc: OSError) -> DiskFull | None:
    """:class:`DiskFull` naming ``path`` when ``exc`` is a full disk or quota, else None."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    what = "no space left on the device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
    return DiskFull(f"{what} while writing {path}; free space there (or name another --out) and rerun the same "
                    "command")


class StageFailed(WitError):
    """A pipeline run failed on a known error; the message names the file and record (exit 1)."""

    exit_code = EXIT_FAILED


def _subclasses(cls: type) -> set[type]:
    found: set[type] = set()
    sub: type
    for sub in type.__subclasses__(cls):
        found |= {sub} | _subclasses(sub)
    return found


def known_names() -> frozenset[str]:
    """Names of every error class of ours loaded in this process (and :data:`KNOWN_BUILTINS`): what a runner's
    error text is searched for. A stage's classes are loaded with its module, before its pipeline runs."""
    classes = {WitError} | _subclasses(WitError) | set(KNOWN_BUILTINS)
    return frozenset(cls.__name__ for cls in classes)


def is_ours(exc: BaseException) -> bool:
    """Whether ``exc`` is one of our errors (or a :data:`KNOWN_BUILTINS` one)."""
    return isinstance(exc, (WitError, *KNOWN_BUILTINS))


_OBJECT_ADDRESS = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")


def stable_text(message: str) -> str:
    """``message`` without the memory addresses Python's default ``repr`` puts in it (Pillow's "cannot identify
    image file <_io.BytesIO object at 0x7f...>" becomes "... <_io.BytesIO>"): messages we store in outputs must
    be the same bytes on every run."""
    return _OBJECT_ADDRESS.sub(r"<\1>", message)


def _clean(message: str) -> str:
    """Beam appends the failing step to a DoFn's error; the file and record are what the user needs."""
    return _BEAM_STEP.sub("", message.strip()).strip()


def known_error_message(exc: BaseException) -> str | None:
    """The message of the project's own error inside ``exc``, or None when ``exc`` is not one of ours.

    Looks at ``exc``, its causes and contexts, then at the text of a runner's error (a worker's traceback
    ends with ``module.ClassName: message``): the last such line whose class is one of ours wins.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if is_ours(current):
            text = str(current.args[0]) if len(current.args) == 1 else str(current)
            return _clean(text.split("\n", 1)[0] if text.count("Traceback") else text)
        current = current.__cause__ or current.__context__
    names = known_names()
    found = None
    for line in str(exc).splitlines():
        match = re.match(r"^\s*(?:[\w.]+\.)?(\w+): (.+)$", line)
        if match and match.group(1) in names:
            found = match.group(2)
    return None if found is None else _clean(found)


def exit_code(exc: BaseException, during_run: bool = False) -> int:
    """The exit code for a known error: 1 during a run, else its ``exit_code`` (2 when it has none)."""
    if during_run:
        return EXIT_FAILED
    code = getattr(exc, "exit_code", None)
    return code if isinstance(code, int) else EXIT_USAGE
