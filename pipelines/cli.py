"""The ``wit`` command. Each subcommand lives in its own module and is imported only when chosen, so
``wit train`` never imports Beam and ``wit build-pairs`` never imports torch.

A subcommand module provides ``add_arguments(parser)`` and ``run(args, beam_argv) -> int``. Arguments the
subcommand does not declare are Beam pipeline options (``--runner``, ``--direct_running_mode``, ...) and
reach ``run`` as ``beam_argv``; commands without a pipeline reject them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

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
    argv = list(sys.argv[1:] if argv is None else argv)
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
