"""The demo's shared fixtures: a small generated corpus and its files, made once; read-only for the tests."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from wit_builder.demo import corpus as demo_corpus

# a corpus small enough to generate in a second, with some of every case
SMALL = demo_corpus.CorpusConfig(train_per_class=3, heldout_per_class=2, flood_extra=2, distractors=5,
                                 mirrors=2, near_duplicates=2, duplicate_pairs=2)


@pytest.fixture(scope="session")
def corpus() -> demo_corpus.Corpus:
    """The corpus of :data:`SMALL`."""
    return demo_corpus.generate(SMALL)


@pytest.fixture(scope="session")
def written(corpus: demo_corpus.Corpus, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The corpus's files written to a folder: (the folder, what ``write_files`` returned)."""
    folder = tmp_path_factory.mktemp("corpus")
    return folder, demo_corpus.write_files(corpus, folder)


def record_stage_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Make ``wit demo``'s stage calls parse their argv with the real subcommand's parser (unknown flags: only the
    runner's) and record them instead of running; returns the list they are appended to."""
    from wit_builder import cli
    from wit_builder.demo import command as demo

    calls: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        module_name, _, takes_beam = cli.COMMANDS[argv[0]]
        parser = cli.build_parser(argv[0], importlib.import_module(module_name))
        _, unknown = parser.parse_known_args(argv[1:])
        assert all(u.startswith("--runner") for u in unknown) if takes_beam else not unknown, (argv[0], unknown)
        calls.append(argv)
        return 0

    monkeypatch.setattr(demo.cli, "main", fake_main)
    return calls
