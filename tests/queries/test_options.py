"""``wit build-queries``' settings (wit_builder.queries.options): one frozen tree whose groups are the rules'
own configs; flags, defaults and stats.json's parameters as before the tree; settings errors name the flags."""

from __future__ import annotations

import importlib

import pytest

from wit_builder import cli
from wit_builder.core import options as opts
from wit_builder.queries.options import OPTIONS, BuildQueriesOptions, ReadOptions, parameters
from wit_builder.queries.pageviews import Traffic
from wit_builder.queries.selection import Budgets, Thresholds

FLAGS = ["--dump", "--out", "--overwrite", "--wordnet-dir", "--omw-file", "--pageviews", "--min-unigram-count",
         "--min-bigram-count",
         "--max-queries", "--unigram-budget", "--bigram-budget", "--title-budget", "--wordnet-budget", "--split-bytes",
         "--parse-timeout", "--parse-memory-mb", "--sketch-width", "--wiki", "--pageview-sites"]
DEFAULTS = {"--overwrite": False, "--wordnet-dir": None, "--omw-file": (), "--pageviews": (),
            "--min-unigram-count": 100,
            "--min-bigram-count": 30,
            "--max-queries": 500_000, "--unigram-budget": 251_465, "--bigram-budget": 100_646, "--title-budget": 61_235,
            "--wordnet-budget": 86_654, "--split-bytes": 64 << 20, "--parse-timeout": 5.0, "--parse-memory-mb": 2048,
            "--sketch-width": None, "--wiki": None, "--pageview-sites": "desktop,mobile"}


def test_flags_and_defaults_are_the_commands_own():
    assert opts.option_strings(OPTIONS) == FLAGS
    assert opts.defaults(OPTIONS) == DEFAULTS


def test_nested_groups_are_argument_groups_and_parse_back_into_the_rules_configs():
    parser = cli.build_parser("build-queries", importlib.import_module("wit_builder.queries.command"))
    titles = [g.title for g in parser._action_groups]
    assert {"count thresholds", "budgets", "reading and counting the dumps", "title traffic (--pageviews rows)"} <= set(
        titles)
    args = parser.parse_args(["--dump", "d.xml", "--out", "o", "--min-bigram-count", "7", "--title-budget", "3",
                              "--parse-memory-mb", "128", "--pageview-sites", "mobile"])
    options = opts.from_namespace(OPTIONS, args)
    assert options.thresholds == Thresholds(100, 7) and options.budgets == Budgets(title_budget=3)
    assert options.reading == ReadOptions(parse_memory_mb=128) and options.reading.parse_memory_bytes == 128 << 20
    assert options.traffic == Traffic(pageview_sites="mobile") and options.traffic.sites == {"mobile"}
    assert options.dump == ("d.xml",) and options.out == "o"


def test_parameters_are_flat_as_the_flags_are():
    options = BuildQueriesOptions(dump=("a.xml", "b.xml"), out="o", budgets=Budgets(max_queries=10))
    assert parameters(options) == {
        "dump": ["a.xml", "b.xml"], "wordnet_dir": None, "omw_file": [], "pageviews": [], "min_unigram_count": 100,
        "min_bigram_count": 30, "max_queries": 10, "unigram_budget": 251_465, "bigram_budget": 100_646,
        "title_budget": 61_235, "wordnet_budget": 86_654, "split_bytes": 64 << 20, "parse_timeout": 5.0,
        "parse_memory_mb": 2048, "sketch_width": None, "wiki": None, "pageview_sites": "desktop,mobile"}


@pytest.mark.parametrize(("extra", "said"), [
    (["--sketch-width", "1000"], "--sketch-width must be >= 1024, got 1000"),
    # 2^40 was taken, printed "41,943,040 MiB of sketches per worker" and died in the pipeline with a traceback
    (["--sketch-width", str(1 << 40)], "--sketch-width must be <= 4294967296 (2^32: the sketch's 32-bit hashes "
                                       "reach no counter beyond; 160 GiB per worker), got 1099511627776"),
    (["--split-bytes", "0"], "--split-bytes must be >= 1, got 0"),
    (["--parse-timeout", "0"], "--parse-timeout must be > 0 seconds, got 0.0"),
    (["--parse-memory-mb", "32"], "--parse-memory-mb must be >= 64, got 32"),
    (["--min-bigram-count", "0"], "count thresholds must be >= 1, got --min-bigram-count 0"),
    (["--title-budget", "-1"], "--title-budget must be >= 0, got -1"),
    (["--max-queries", "-5"], "--max-queries must be >= 0, got -5"),
    (["--wiki", "english"], "--wiki must be LANGUAGE.PROJECT"),
    (["--pageview-sites", "tablet"], "--pageview-sites must name a non-empty subset of ['desktop', 'mobile']"),
])
def test_a_setting_out_of_range_is_exit_2_naming_its_flag(extra, said, tmp_path, capsys):
    assert cli.main(["build-queries", "--dump", "d.xml", "--out", str(tmp_path / "q"), *extra]) == 2
    err = capsys.readouterr().err
    assert f"wit build-queries: error: {said}" in err and "Traceback" not in err, err
    assert not (tmp_path / "q").exists()
