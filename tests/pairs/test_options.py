"""``wit_builder.pairs.options``: one frozen tree whose nested configs are argument groups; settings errors name
the user's flags; the pool-file group resolves presets and per-input layouts."""

from __future__ import annotations

import argparse

import pytest

from wit_builder.core import options as opts
from wit_builder.core.balance import BalanceConfig
from wit_builder.pairs.options import OPTIONS, BalanceOptions, BuildPairsOptions, PoolFileOptions
from wit_builder.pairs.readers.layouts import LAYOUTS, Layout

REQUIRED = ["--queries", "q", "--pool", "a.parquet", "--out", "o"]


def parse(*argv: str) -> BuildPairsOptions:
    parser = argparse.ArgumentParser()
    opts.add_arguments(parser, OPTIONS)
    return opts.from_namespace(OPTIONS, parser.parse_args([*REQUIRED, *argv]))


def settings_error(*argv: str) -> str:
    with pytest.raises(ValueError) as info:
        parse(*argv)
    return opts.with_flag_names(str(info.value), OPTIONS)


def test_nested_groups_carry_the_flags_and_defaults() -> None:
    parsed = parse("--balance", "probabilistic", "--per-query-cap", "7", "--oversample", "1.5", "--url-col", "URL",
                   "--no-header", "--caption-col", "0", "--url-col", "1", "--pool-format", "tsv")
    assert parsed.balance == BalanceOptions("probabilistic", 7, 0, 1.5)
    assert isinstance(parsed.balance, BalanceConfig) and parsed.balance.target == 11  # the rules take it as is
    assert (parsed.pool_files.header, parsed.pool_files.url_col) == (False, "1")
    assert parse() == BuildPairsOptions(("q",), ("a.parquet",), "o")
    assert opts.defaults(OPTIONS)["--balance"] == "hard"
    assert opts.defaults(OPTIONS)["--per-query-cap"] == BalanceConfig.per_query_cap
    assert {"--pool-layout", "--no-header", "--max-url-length", "--seed"} <= set(opts.option_strings(OPTIONS))


def test_settings_errors_name_the_flags() -> None:
    assert settings_error("--rows-per-file", "0") == "--rows-per-file must be at least 1, not 0"
    assert settings_error("--shuffle-buckets", "0") == "--shuffle-buckets must be at least 1, not 0"
    assert settings_error("--shuffle-buckets", "1000000000") == (  # one spill file per bucket in-process
        "--shuffle-buckets must be at most 1048576 (one bucket per 64 MiB of pool covers 64 TiB), not 1000000000")
    assert parse("--shuffle-buckets", "1048576").shuffle_buckets == 1 << 20
    assert settings_error("--oversample", "0.5").startswith("--oversample must be a finite number >= 1")
    assert settings_error("--max-url-length", "8") == "--max-url-length must be at least 16, not 8"
    assert settings_error("--pool-layout", "laion") == "--pool-layout 'laion': expected PATTERN=LAYOUT"
    assert "neither a preset" in settings_error("--pool-layout", "*.csv=nonsense")
    assert "without a header --url-col is a 0-based column position" in settings_error("--no-header")


def test_preset_and_layouts_resolve_into_the_readers_options() -> None:
    pool = PoolFileOptions(pool_preset="cc3m", pool_layout=("laion-*=laion", "*.csv=url=image,caption=alt")
                           ).reader_options()
    cc3m = LAYOUTS["cc3m"]
    assert (pool.fmt, pool.url_col, pool.caption_col, pool.header) == (cc3m.fmt, cc3m.url_col, cc3m.caption_col,
                                                                       False)
    assert pool.layouts == (("laion-*", LAYOUTS["laion"]), ("*.csv", Layout("auto", "image", "alt", True)))
    assert PoolFileOptions(pool_format="parquet", pool_preset="laion").reader_options().fmt == "parquet"
    assert PoolFileOptions().reader_options().max_url_length == 2048
