"""The ``wit`` command and its one contract. Each subcommand lives in its own module and is imported only when
chosen, so ``wit train`` never imports Beam and ``wit build-pairs`` never imports torch.

A subcommand module provides ``OPTIONS`` (a frozen, validated dataclass whose fields carry help, unit and
choices; the flags are generated from it by :mod:`wit_builder.core.options`) and ``run(options, beam_argv) -> int``.

- Strict parsing: an argument that is neither the command's option nor a known Beam pipeline option is an
  error (exit 2) naming it and suggesting the nearest valid option. Beam options reach ``run`` as
  ``beam_argv``; commands without a pipeline reject them.
- Exit codes: 0 success, 1 the run failed, 2 bad usage or bad input found before work, 130 interrupted.
- Errors: one message on stderr. The project's own errors (:mod:`wit_builder.core.errors`) never show a traceback;
  any other error keeps its traceback.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import difflib
import importlib
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterable, Iterator
from typing import Any

from wit_builder.core import errors
from wit_builder.core import options as opts

# name -> (module, one-line help, takes Beam options)
COMMANDS: dict[str, tuple[str, str, bool]] = {
    "build-queries": ("wit_builder.queries.command", "stage 1: query terms from Wikipedia dumps", True),
    "build-pairs": ("wit_builder.pairs.command", "stage 2: match alt texts against the queries, balance", True),
    "download": ("wit_builder.download.command", "stage 3: download, decode and resize images", True),
    "finalize": ("wit_builder.finalize.command", "stage 4: dedup, re-balance, write WebDataset shards", True),
    "train": ("trainer.train", "stage 5: train CLIP on WebDataset shards", False),
    "eval": ("trainer.eval.command", "zero-shot, retrieval and linear-probe evaluation", False),
    "export": ("trainer.export", "export a checkpoint to open_clip's state-dict layout", False),
    "demo": ("wit_builder.demo.command", "the whole chain on the bundled default data", True),
}


def _usage() -> str:
    lines = ["usage: wit COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<14} {helptext}" for name, (_, helptext, _) in COMMANDS.items()]
    lines += ["", "Run 'wit COMMAND --help' for a command's options."]
    return "\n".join(lines)


def beam_parser() -> argparse.ArgumentParser:
    """A parser that knows every option of every Beam ``PipelineOptions`` subclass (runner options included)."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False, add_help=False)
    classes: dict[str, type] = {}
    for cls in PipelineOptions.__subclasses__():  # what Beam itself parses (PipelineOptions.get_all_options)
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)
    return parser


def beam_flags() -> list[str]:
    """Every Beam pipeline option flag, e.g. ``--runner``, ``--direct_running_mode``."""
    return sorted({s for a in beam_parser()._actions for s in a.option_strings if s.startswith("--")})


def _flag_of(arg: str) -> str:
    return arg.split("=", 1)[0]


def unknown_arguments(rest: list[str], takes_beam: bool) -> tuple[list[str], list[str]]:
    """(Beam arguments, unknown arguments) among the arguments the command's parser left over.

    A command without a pipeline has no Beam arguments: everything left over is unknown.
    """
    if not rest:
        return [], []
    if not takes_beam:
        return [], list(rest)
    _, unknown = beam_parser().parse_known_args(rest)
    return ([], unknown) if unknown else (list(rest), [])


def suggestion(arg: str, valid: Iterable[str]) -> str | None:
    """The valid flag nearest to ``arg`` (difflib), ``-`` and ``_`` treated alike; None when nothing is close."""
    def bare(flag: str) -> str:  # the shared "--" would make every pair of short flags look alike
        return flag.lstrip("-").replace("_", "-")

    canon = {bare(v): v for v in valid}
    close = difflib.get_close_matches(bare(_flag_of(arg)), list(canon), n=1, cutoff=0.6)
    return canon[close[0]] if close else None


def _reject(name: str, unknown: list[str], own: list[str], takes_beam: bool) -> int:
    known_beam = set(beam_flags())
    first = next((a for a in unknown if a.startswith("-")), unknown[0])
    flag = _flag_of(first)
    if not takes_beam and flag in known_beam:
        message = f"{flag} is a Beam pipeline option; 'wit {name}' runs no Beam pipeline"
    elif not first.startswith("-"):
        message = f"unexpected argument {first!r}"
    else:
        candidates = own + (sorted(known_beam) if takes_beam else [])
        near = suggestion(first, candidates)
        message = f"unknown option {flag}" + (f"; did you mean {near}?" if near else "")
    print(f"wit {name}: error: {message} (see 'wit {name} --help')", file=sys.stderr)
    return errors.EXIT_USAGE


def build_parser(name: str, module: Any) -> argparse.ArgumentParser:
    _, helptext, takes_beam = COMMANDS[name]
    parser = argparse.ArgumentParser(
        prog=f"wit {name}",
        description=helptext,
        allow_abbrev=False,  # an abbreviation could swallow a Beam option; spell options out
        epilog=" ".join(filter(None, [
            "Beam pipeline options (--runner, --direct_running_mode, ...) pass through." if takes_beam else None,
            getattr(module, "EPILOG", None)])) or None,  # e.g. a command's own exit statuses
    )
    opts.add_arguments(parser, module.OPTIONS)
    return parser


class _BeamBigQueryImportWarning(logging.Filter):
    """Drops the one warning Beam 2.77 logs while it is imported when google-cloud packages are installed but
    google-apitools is not (``apache_beam/io/gcp/internal/clients/bigquery/__init__.py``: "apitools not found,
    and bigquery client libraries are not available ..."): no stage uses BigQuery. Only that record, by its
    module and text; every other warning passes."""

    SOURCE = os.path.join("apache_beam", "io", "gcp", "internal", "clients", "bigquery", "__init__.py")

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.pathname.endswith(self.SOURCE) and str(record.msg).startswith("apitools not found"))


OUR_LOGGERS = ("wit", "wit_builder", "trainer")  # progress lines ("wit.progress"), per-file notes: INFO


def _configure_logging() -> None:
    """Our INFO lines (progress, per-file notes) and everyone's warnings on stderr, set up before any Beam import:
    Beam logs through the root logger while it is imported (the warning above), and ``logging.warning`` on an
    unconfigured root configures it itself, which made this set-up a no-op and hid every progress line in log
    files. Other libraries stay at WARNING (Beam's job servers log every Java line at INFO)."""
    root = logging.getLogger()
    if not any(isinstance(f, _BeamBigQueryImportWarning) for f in root.filters):
        root.addFilter(_BeamBigQueryImportWarning())
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for ours in OUR_LOGGERS:
        logging.getLogger(ours).setLevel(logging.INFO)


@contextlib.contextmanager
def _catch_ctrl_c() -> Iterator[threading.Event]:
    """Ctrl-C raises KeyboardInterrupt as usual and also sets the yielded flag (main thread only)."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: object) -> None:
        flag.set()
        raise KeyboardInterrupt

    if previous is signal.SIG_IGN:  # a parent asked us to ignore Ctrl-C
        yield flag
        return
    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: list[str] | None = None) -> int:
    """Run one command. Called with no ``argv`` (the ``wit`` process itself) it ends the process on return.

    Why: pyarrow's native thread pools (its CPU and I/O pools, jemalloc's background thread) and grpc's are
    still alive when CPython finalizes; tearing them down from C++ static destructors races them and now and
    then aborts the process with ``terminate called without an active exception`` (exit 134), after the
    command's real exit status was decided (seen in 3 of 17 early error exits; reproduced with nothing but
    ``pyarrow.parquet.read_table`` and ``sys.exit(2)``: 1 in 60). So the ``wit`` process flushes its
    output, runs Python's exit handlers, and leaves with ``os._exit``, which runs no C++ destructors.
    """
    if argv is not None:
        return _main(list(argv))
    try:
        code = _main(sys.argv[1:])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    _leave(code)
    return code  # not reached


def _leave(code: int) -> None:
    """Exit now: Python's atexit handlers (logging, temporary files) run, native destructors do not."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe: nothing left to say
            stream.flush()
    os._exit(code)


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else errors.EXIT_USAGE
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        near = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        print(f"wit: unknown command {name!r}{hint}\n\n{_usage()}", file=sys.stderr)
        return errors.EXIT_USAGE
    module_name, _, takes_beam = COMMANDS[name]
    with _catch_ctrl_c() as interrupted:
        return _run(name, rest, module_name, takes_beam, interrupted)


def _run(name: str, rest: list[str], module_name: str, takes_beam: bool, interrupted: threading.Event) -> int:
    try:
        _configure_logging()  # before the command's module imports Beam (see _configure_logging)
        module = importlib.import_module(module_name)
        parser = build_parser(name, module)
        # Unknown flags first, with required flags relaxed: a typo in a required flag (--raww) is named as a
        # typo with a suggestion, not reported as "--raw is required".
        required = [action for action in parser._actions if action.required]
        for action in required:
            action.required = False
        _, leftover = parser.parse_known_args(rest)
        beam_argv, unknown = unknown_arguments(leftover, takes_beam)
        if unknown:
            return _reject(name, unknown, opts.option_strings(module.OPTIONS), takes_beam)
        for action in required:
            action.required = True
        args, leftover = parser.parse_known_args(rest)
        try:
            config = opts.from_namespace(module.OPTIONS, args)
        except (ValueError, TypeError) as err:
            print(f"wit {name}: error: {opts.with_flag_names(str(err), module.OPTIONS)}", file=sys.stderr)
            return errors.EXIT_USAGE
        return int(module.run(config, beam_argv) or 0)
    except BaseException as err:
        # A runner may wrap the KeyboardInterrupt raised inside a DoFn into its own error: the flag tells.
        if isinstance(err, KeyboardInterrupt) or interrupted.is_set():
            print(f"\nwit {name}: {errors.INTERRUPTED}", file=sys.stderr, flush=True)
            return errors.EXIT_INTERRUPTED
        if not isinstance(err, Exception):
            raise  # SystemExit from --help or a usage error of argparse
        message = errors.known_error_message(err)
        if message is None:
            raise  # not one of ours: the traceback is what a bug report needs
        print(f"wit {name}: error: {message}", file=sys.stderr, flush=True)
        return errors.exit_code(err)


if __name__ == "__main__":
    sys.exit(main())
