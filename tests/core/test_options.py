"""The flags generated from a frozen options dataclass (wit_builder.core.options): the parser round trip, units and
defaults in the help, validation messages in flag names, and the ``--out`` check. (Every command's generated
parser: tests/test_cli.py.)"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from wit_builder.core import options as opts
from wit_builder.core.options import option
from wit_builder.download.options import DownloadOptions


@dataclass(frozen=True)
class Toy:
    path: tuple[str, ...] = option(help="inputs")
    size: int = option(3, unit="px", help="a size")
    mode: str = option("a", choices=("a", "b"), help="a mode")
    limit: float | None = option(None, unit="s", help="a limit")
    loud: bool = option(False, help="say more")
    polite: bool = option(True, negate="--rude", help="be rude")
    hidden: int = option(7, cli=False, help="not a flag")

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"--size must be >= 1, got {self.size}")


def test_generated_parser_round_trips_a_dataclass():
    parser = argparse.ArgumentParser()
    opts.add_arguments(parser, Toy)
    toy = opts.from_namespace(Toy, parser.parse_args(["--path", "x", "--path", "y", "--limit", "2.5", "--rude"]))
    assert toy == Toy(path=("x", "y"), limit=2.5, polite=False)
    assert opts.option_strings(Toy) == ["--path", "--size", "--mode", "--limit", "--loud", "--rude"]
    with pytest.raises(ValueError, match="--size must be >= 1"):
        opts.from_namespace(Toy, parser.parse_args(["--path", "x", "--size", "0"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--path", "x", "--mode", "c"])
    with pytest.raises(SystemExit):
        parser.parse_args([])  # --path is required
    text = " ".join(parser.format_help().split())
    assert "a size (default: 3 px)" in text and "a limit (default: none)" in text and "--hidden" not in text


def test_flag_names_replace_identifiers_only():
    assert opts.with_flag_names("rows_per_shard must be >= 1", DownloadOptions) == "--rows-per-shard must be >= 1"
    assert opts.with_flag_names("deadline_s must be > 0", DownloadOptions) == "--deadline must be > 0"
    # one-word names only as the first word; flags already spelled with dashes stay as they are
    said = "the threads are --rows-per-shard"
    assert opts.with_flag_names(said, DownloadOptions) == said


def test_out_folder_check_refuses_a_file_or_a_path_below_one(tmp_path):
    opts.check_out_folder(str(tmp_path / "new" / "folder"))  # not there yet: made later
    opts.check_out_folder(str(tmp_path))
    opts.check_out_folder("gs://bucket/out")  # object stores are not checked
    existing = tmp_path / "stats.json"
    existing.write_text("{}")
    with pytest.raises(ValueError, match=r"--out '.*stats.json' is a file, not a folder"):
        opts.check_out_folder(str(existing))
    with pytest.raises(ValueError, match=r"--raw '.*sub' is below the file .*stats.json, not a folder"):
        opts.check_out_folder(str(existing / "sub"), flag="--raw")
