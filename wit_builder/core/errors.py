"""The errors a user can fix, and how the ``wit`` launcher recognises them (no traceback for these).

Exit codes of every command (``wit_builder/cli.py``): 0 success; 1 the run failed (:class:`StageFailed`, a known
error raised while the pipeline ran); 2 bad usage or bad input found before any work (a :class:`UsageError` or
any other known error raised before the run); 130 interrupted (Ctrl-C).

Stage modules keep their own error classes (``DumpError``, ``RawInputError``, ...); they are "known" by class
name, because a runner may hand an error back as text (a worker process's traceback in a RuntimeError).
"""

from __future__ import annotations

import re

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
INTERRUPTED = "interrupted; rerun the same command to resume"

# Errors that name the bad input (file, record) and say what to do; a traceback adds nothing for the user.
KNOWN_ERRORS = frozenset({
    "WitError", "UsageError", "StageFailed",
    "DumpError", "WikitextError", "WordNetError", "PageviewError",  # stage 1
    "PoolFormatError", "ColumnTypeError",  # stage 2 (and stage 3's pairs input)
    "InputError",  # stage 3
    "RawInputError",  # stage 4
    "DataError",  # train, eval, export
    "DemoError",
    "FileNotFoundError",
})
_BEAM_STEP = re.compile(r"\s*\[while running '[^']*'\]\s*$")


class WitError(Exception):
    """Base of the project's user-fixable errors; ``exit_code`` is what the launcher returns."""

    exit_code = EXIT_FAILED


class UsageError(WitError, ValueError):
    """Bad usage or bad input found before any work (exit 2)."""

    exit_code = EXIT_USAGE


class StageFailed(WitError):
    """A pipeline run failed on a known error; the message names the file and record (exit 1)."""

    exit_code = EXIT_FAILED


def _is_known(exc: BaseException) -> bool:
    return any(cls.__name__ in KNOWN_ERRORS for cls in type(exc).__mro__)


def _clean(message: str) -> str:
    """Beam appends the failing step to a DoFn's error; the file and record are what the user needs."""
    return _BEAM_STEP.sub("", message.strip()).strip()


def known_error_message(exc: BaseException) -> str | None:
    """The message of the project's own error inside ``exc``, or None when ``exc`` is not one of ours.

    Looks at ``exc``, its causes and contexts, then at the text of a runner's error (a worker's traceback
    ends with ``module.ClassName: message``): the last such line whose class is known wins.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_known(current):
            text = str(current.args[0]) if len(current.args) == 1 else str(current)
            return _clean(text.split("\n", 1)[0] if text.count("Traceback") else text)
        current = current.__cause__ or current.__context__
    found = None
    for line in str(exc).splitlines():
        match = re.match(r"^\s*(?:[\w.]+\.)?(\w+): (.+)$", line)
        if match and match.group(1) in KNOWN_ERRORS:
            found = match.group(2)
    return None if found is None else _clean(found)


def exit_code(exc: BaseException, during_run: bool = False) -> int:
    """The exit code for a known error: its ``exit_code`` if it has one, else 1 during a run, 2 before."""
    code = getattr(exc, "exit_code", None)
    if isinstance(code, int):
        return code
    return EXIT_FAILED if during_run else EXIT_USAGE
