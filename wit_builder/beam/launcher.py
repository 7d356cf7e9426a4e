"""The one launch sequence of a Beam stage: pipeline options with offline defaults (``--runner=FnApiRunner``
unless one is named), running and waiting, and our errors raised inside a run turned into :class:`StageFailed`;
:class:`Stage`, what each command declares (its options, what it resolves before work, its hooks), and
:func:`run_stage`, the sequence they share."""

from __future__ import annotations

import abc
import contextlib
import difflib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Generic, Protocol, TypeVar

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from schemas.stats import STATS_JSON
from wit_builder.beam import counting, fileio, objectstore
from wit_builder.core import errors, progress, run_folder
from wit_builder.core.options import check_out_folder

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


def run_pipeline(pipeline: beam.Pipeline, out: str | None = None) -> PipelineResult:
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


# ---- the one launcher of a Beam stage ----

Pipeline = beam.Pipeline  # for a command's type hints: commands import no Beam themselves (ruff TID251)

@dataclass(frozen=True)
class Outcome:
    """How a stage's run ended, as :meth:`Stage.finish` reports it.

    ``summary``: the parts of the one summary line (``wit STAGE: part; part; 12.3 s -> OUT``); ``warnings``:
    lines for stderr (``wit STAGE: warning: ...``); ``error``: a line for stderr when ``exit_code`` is not 0.
    """

    summary: list[str]
    exit_code: int = errors.EXIT_OK
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


class StageOptions(Protocol):
    """What the launcher reads of a command's options: its ``--out`` and ``--overwrite``."""

    @property
    def out(self) -> str: ...

    @property
    def overwrite(self) -> bool: ...


OptionsT = TypeVar("OptionsT", bound=StageOptions)
InputsT = TypeVar("InputsT")


class Stage(abc.ABC, Generic[OptionsT, InputsT]):
    """What one Beam command declares; :func:`run_stage` owns the sequence every command shares.

    ``Stage[Options, Inputs]``: ``options`` is the command's frozen options dataclass; ``inputs`` is the frozen
    dataclass :meth:`resolve` returns (what the flags name, found and checked), set by :func:`run_stage` before
    any other hook runs. A subclass sets ``name`` (the command: ``build-pairs``), ``namespace`` (its Beam counters,
    for monitoring) and ``count_names`` (counts reported as 0 when no record reached them), and implements the
    hooks below, reading ``self.options`` and ``self.inputs``; it keeps no other state.
    """

    name: ClassVar[str]
    namespace: ClassVar[str]
    count_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: OptionsT) -> None:
        self.options = options
        self._inputs: InputsT | None = None
        # The Beam counters of ``namespace`` after the run (monitoring only; set by run_stage before finish).
        self.monitoring: dict[str, int] = {}

    @property
    def out(self) -> str:
        """The output folder (``--out``)."""
        return str(self.options.out)

    @property
    def inputs(self) -> InputsT:
        """What :meth:`resolve` returned (set by :func:`run_stage`, or a test); RuntimeError before."""
        if self._inputs is None:
            raise RuntimeError(f"{type(self).__name__}: resolve() first")
        return self._inputs

    @inputs.setter
    def inputs(self, inputs: InputsT) -> None:
        self._inputs = inputs

    @abc.abstractmethod
    def resolve(self) -> InputsT:
        """Checks before any work: resolve and check the inputs; return them (a frozen dataclass, never None).

        Raise our errors, or ``ValueError``/``FileNotFoundError``/``KeyError`` naming the flag and the file: the
        launcher makes each one line on stderr and exit 2. Nothing may be written here.
        """

    def announce(self) -> list[str]:
        """The lines to print before the run (after :meth:`resolve`); none by default."""
        return []

    def clean_rerun(self) -> list[str]:
        """Remove what an earlier run left that this run must not mix with (called after ``resolve``, before the
        pipeline); return a line to print, or none."""
        return []

    def needs_run(self) -> bool:
        """Whether the pipeline has work to do; every stage today always runs it (download counts the shards of
        earlier runs through it too), so this is the seam for one that may not."""
        return True

    @abc.abstractmethod
    def build(self, pipeline: beam.Pipeline) -> None:
        """Attach the stage's composite to ``pipeline``; its counts go to ``OUT/_counts.json`` (``WriteCounts``)."""

    def on_failure(self, error: errors.StageFailed) -> errors.StageFailed:
        """The error to raise when the run failed on one of ours (a stage may add what it left behind)."""
        return error

    def after_run(self) -> None:
        """Clean-up that runs whether the pipeline succeeded or not (temporary caches)."""
        return None

    @abc.abstractmethod
    def finish(self, counts: dict[str, int], seconds: float) -> Outcome:
        """Write ``stats.json`` (last) from ``counts`` (summed from the data, ``{}`` when nothing ran) and
        return the outcome."""


def _cross_check(stage: Stage, counts: dict[str, int]) -> None:
    """Beam metrics (``stage.monitoring``) are for monitoring: a difference from the data-derived counts (a retried
    bundle on a runner that reports attempted values) is logged, never fatal."""
    counted = stage.monitoring
    differ = {k: (n, counted[k]) for k, n in counts.items() if k in counted and counted[k] != n}
    if differ:
        logging.getLogger(__name__).info("%s: monitoring counters differ from the data-derived counts "
                                         "(counts, counter): %s", stage.name, differ)


def check_owner(stage: Stage) -> None:
    """UsageError unless ``stage`` may write into its ``--out`` (``run_folder.ownership_problem``: empty, or its own
    run marker) or ``--overwrite`` was given. Reads only."""
    if stage.options.overwrite:
        return
    names = fileio.folder_names(stage.out)
    marker = fileio.read_marker(stage.out) if run_folder.MARKER in names else None
    problem = run_folder.ownership_problem(stage.out, stage.name, names, marker)
    if problem is not None:
        raise errors.UsageError(problem)


def take_folder(stage: Stage) -> run_folder.FolderLock | None:
    """Lock ``--out`` (local folders; None on an object store), check it is ours again under the lock, write the
    run marker, and remove what killed or failed runs of ours left: temporaries and Beam's error log. UsageError
    when another run holds the lock."""
    lock = None
    if fileio.local_path_or_none(stage.out) is not None:
        lock = run_folder.FolderLock(stage.out, stage.name)
        try:
            lock.acquire()
        except run_folder.LockedError as exc:
            raise errors.UsageError(str(exc)) from None
        if (note := lock.stale_note()) is not None:
            print(f"wit {stage.name}: {note}", flush=True)
    try:
        check_owner(stage)  # the folder may have changed between the check before work and the lock
        fileio.write_marker(stage.out, stage.name)
        stale = fileio.remove_temporaries(stage.out)
        stale_log = fileio.join(stage.out, BEAM_ERRORS_LOG)
        if fileio.exists(stale_log):
            fileio.delete([stale_log])
        if stale:
            print(f"wit {stage.name}: removed {len(stale)} temporary file(s) an interrupted run left", flush=True)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return lock


def run_stage(stage: Stage, beam_argv: Iterable[str]) -> int:
    """Run a Beam stage: ``--out`` checks (a file, another's folder: ``check_owner``), checks before work
    (:meth:`Stage.resolve`, kept as ``stage.inputs``), the lines of :meth:`Stage.announce`, the folder taken
    (``take_folder``: lock, run marker, temporaries), rerun clean-up, the pipeline, the counts, ``stats.json`` (via
    :meth:`Stage.finish`), the summary line; the exit status. The lock is released however the run ends.

    Errors: anything the checks before work raise becomes :class:`~wit_builder.core.errors.UsageError` (exit 2,
    one line); one of our errors inside the run becomes :class:`~wit_builder.core.errors.StageFailed` (exit 1);
    the ``wit`` command prints either in one line. Other errors keep their traceback.
    """
    started = time.monotonic()
    try:
        check_out_folder(stage.out)
        beam_options = pipeline_options(beam_argv)
        # The checks before work read files too: Beam's filesystems get the run's options (--s3_endpoint_url, ...)
        # now, and an s3:// bucket that cannot be used is one line here, not minutes of Beam's retries.
        objectstore.configure(beam_options)
        objectstore.check_s3(objectstore.paths_in(stage.options), beam_options)
        check_owner(stage)
        stage.inputs = stage.resolve()
    except errors.UsageError:
        raise
    except (errors.WitError, ValueError, FileNotFoundError, KeyError) as exc:
        message = errors.known_error_message(exc) or (str(exc.args[0]) if isinstance(exc, KeyError) else str(exc))
        raise errors.UsageError(message) from exc
    for line in stage.announce():
        print(line, flush=True)
    fileio.makedirs(stage.out)
    lock = take_folder(stage)
    try:
        return _run_taken(stage, beam_options, started)
    finally:
        if lock is not None:
            lock.release()


def _run_taken(stage: Stage, beam_options: PipelineOptions, started: float) -> int:
    """:func:`run_stage` once the folder is ours: clean-up, the pipeline, the counts, finish, the summary line."""
    for line in stage.clean_rerun():
        print(line, flush=True)
    counts: dict[str, int] = {}
    if stage.needs_run():
        pipeline = beam.Pipeline(options=beam_options)
        stage.build(pipeline)
        try:
            result = run_pipeline(pipeline, stage.out)
        except BaseException as exc:
            # A failed run's half-written files are ours to remove, and an earlier run's stats.json would make
            # the folder look finished.
            with contextlib.suppress(Exception):
                fileio.remove_temporaries(stage.out)
                fileio.delete([p for p in [fileio.join(stage.out, STATS_JSON)] if fileio.exists(p)])
            if isinstance(exc, errors.StageFailed):
                raise stage.on_failure(exc) from exc
            raise
        finally:
            stage.after_run()
        counts = counting.read_counts(stage.out, stage.count_names)
        stage.monitoring = counting.counters(result, stage.namespace)  # for a stage that reports a difference itself
        _cross_check(stage, counts)
    outcome = stage.finish(counts, time.monotonic() - started)
    for warning in outcome.warnings:
        print(f"wit {stage.name}: warning: {warning}", file=sys.stderr, flush=True)
    print(progress.summary_line(stage.name, outcome.summary, time.monotonic() - started, stage.out), flush=True)
    if outcome.error:
        print(f"wit {stage.name}: {outcome.error}", file=sys.stderr, flush=True)
    return outcome.exit_code
