"""The ``wit`` command. Each subcommand lives in its own module and is imported only when chosen, so
``wit train`` never imports Beam and ``wit build-pairs`` never imports torch.

A subcommand module provides ``add_arguments(parser)`` and ``run(args, beam_argv) -> int``. Arguments the
subcommand does not declare are Beam pipeline options (``--runner``, ``--direct_running_mode``, ...) and
reach ``run`` as ``beam_argv``; commands without a pipeline reject them.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import logging
import os
import sys
import traceback

# name -> (module, one-line help, takes Beam options)
COMMANDS: dict[str, tuple[str, str, bool]] = {
    "build-queries": ("pipelines.build_queries", "stage 1: query terms from Wikipedia dumps", True),
    "build-pairs": ("pipelines.build_pairs", "stage 2: match alt texts against the queries, balance", True),
    "download": ("pipelines.download", "stage 3: download, decode and resize images", True),
    "finalize": ("pipelines.finalize", "stage 4: dedup, re-balance, write WebDataset shards", True),
    "train": ("trainer.train", "stage 5: train CLIP on WebDataset shards", False),
    "eval": ("trainer.evaluate", "zero-shot, retrieval and linear-probe evaluation", False),
    "export": ("trainer.export", "export a checkpoint to open_clip's state-dict layout", False),
    "demo": ("pipelines.demo", "the whole chain on the bundled default data", True),
}


def _usage() -> str:
    lines = ["usage: wit COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<14} {helptext}" for name, (_, helptext, _) in COMMANDS.items()]
    lines += ["", "Run 'wit COMMAND --help' for a command's options."]
    return "\n".join(lines)


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
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"wit: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, helptext, takes_beam = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog=f"wit {name}",
        description=helptext,
        epilog="Other --options are passed to Beam as pipeline options." if takes_beam else None,
    )
    module.add_arguments(parser)
    if takes_beam:
        args, beam_argv = parser.parse_known_args(rest)
    else:
        args, beam_argv = parser.parse_args(rest), []
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("apache_beam", "urllib3", "PIL", "matplotlib", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return int(module.run(args, beam_argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
