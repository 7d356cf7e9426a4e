"""The one launch sequence of a Beam stage: pipeline options with offline defaults (``--runner=FnApiRunner``
unless one is named), running and waiting, and our errors raised inside a run turned into :class:`StageFailed`."""

from __future__ import annotations

import difflib
import logging
import os
import tempfile
from collections.abc import Iterable

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from wit_builder.core import errors, progress

# Beam 2.77's default runner tries to download the Prism binary first; name the in-process runner.
DEFAULT_RUNNER = "FnApiRunner"


def pipeline_options(beam_argv: Iterable[str]) -> PipelineOptions:
    """PipelineOptions from pass-through arguments, with ``--runner=FnApiRunner`` unless one is named."""
    argv = list(beam_argv)
    if not any(a == "--runner" or a.startswith("--runner=") for a in argv):
        argv.append(f"--runner={DEFAULT_RUNNER}")
    options = PipelineOptions(argv)
    runner = options.view_as(StandardOptions).runner
    known = {path.rsplit(".", 1)[-1].lower() for path in StandardOptions.ALL_KNOWN_RUNNERS}
    if isinstance(runner, str) and "." not in runner and not {runner.lower(), f"{runner.lower()}runner"} & known:
        near = difflib.get_close_matches(runner, StandardOptions.KNOWN_RUNNER_NAMES, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        names = ", ".join(StandardOptions.KNOWN_RUNNER_NAMES)
        raise errors.UsageError(f"unknown --runner {runner!r}{hint} (one of {names} or a runner class's full name)")
    return options


BEAM_ERRORS_LOG = "beam-errors.log"  # where Beam's own log of a failed DoFn goes when the error is one of ours


class _KeepKnownErrorsOffTerminal(logging.Filter):
    """Beam logs a failed DoFn's error with its traceback before the run fails; when the error is one of the
    project's own (it names the file and record) or Ctrl-C, the launcher prints the one-line message instead and
    Beam's record goes to ``path``."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.kept = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("apache_beam") or record.levelno < logging.ERROR:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        known = errors.known_error_message(exc) if exc is not None else None
        if known is None:
            known = errors.known_error_message(Exception(record.getMessage()))
        interrupted = isinstance(exc, KeyboardInterrupt) or "KeyboardInterrupt" in record.getMessage()
        if known is None and not interrupted:  # Ctrl-C: the launcher says it in one line
            return True
        self.kept += 1
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s").format(record) + "\n")
        return False


def run_pipeline(pipeline: beam.Pipeline, out: str | None = None) -> beam.runners.runner.PipelineResult:
    """Run ``pipeline`` and wait for it: the one launch sequence of every Beam stage.

    A known error (:mod:`wit_builder.core.errors`) raised inside the run becomes :class:`StageFailed` with its
    message (the CLI exits 1 without a traceback); Beam's own log of it goes to ``OUT/beam-errors.log`` (a temp
    folder when ``out`` is remote). Any other error propagates with its traceback. Ctrl-C propagates as
    KeyboardInterrupt (the CLI exits 130).
    """
    folder = out if out and "://" not in out and os.path.isdir(out) else tempfile.gettempdir()
    keep = _KeepKnownErrorsOffTerminal(os.path.join(folder, BEAM_ERRORS_LOG))
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(keep)
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except Exception as exc:
        message = errors.known_error_message(exc)
        if message is None:
            raise
        where = f" (Beam's log: {keep.path})" if keep.kept else ""
        raise errors.StageFailed(f"{message}{where}") from exc
    finally:
        for handler in handlers:
            handler.removeFilter(keep)
        progress.close_all()  # the bars end before the stage's summary line
    return result
