"""``wit download``'s settings (wit_builder.download.options): one frozen tree, its validation naming the user's
flags, its argument groups, and stats.json's parameters named by flag."""

from __future__ import annotations

import argparse

import pytest

from wit_builder.core import options as opts
from wit_builder.download.options import (
    RESIZE_MODES,
    DownloadOptions,
    FetchConfig,
    ImageConfig,
    parameters,
)

REQUIRED = ["--pairs", "p.parquet", "--out", "o"]


def parse(*argv: str) -> DownloadOptions:
    parser = argparse.ArgumentParser()
    opts.add_arguments(parser, DownloadOptions)
    return opts.from_namespace(DownloadOptions, parser.parse_args([*REQUIRED, *argv]))


def test_image_config_is_validated():
    with pytest.raises(ValueError, match="resize_mode"):
        ImageConfig(resize_mode="stretch")
    with pytest.raises(ValueError, match="encode_format"):
        ImageConfig(encode_format="gif")
    with pytest.raises(ValueError, match="encode_quality"):
        ImageConfig(encode_quality=0)
    assert set(RESIZE_MODES) == {"no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"}


def test_fetch_config_is_validated():
    with pytest.raises(ValueError, match="deadline_s must be > 0, got 0"):
        FetchConfig(deadline_s=0)
    with pytest.raises(ValueError, match="per_host_concurrency must be >= 1, got 0"):
        FetchConfig(per_host_concurrency=0)
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        FetchConfig(timeout_s=0.0)
    with pytest.raises(ValueError, match="connect_timeout_s must be > 0, got -1"):
        FetchConfig(connect_timeout_s=-1.0)
    with pytest.raises(ValueError, match="max_bytes must be >= 1, got 0"):
        FetchConfig(max_bytes=0)
    with pytest.raises(ValueError, match="retries must be >= 0, got -1"):
        FetchConfig(retries=-1)
    with pytest.raises(ValueError, match="max_redirects must be >= 0, got -1"):
        FetchConfig(max_redirects=-1)
    with pytest.raises(ValueError, match="backoff_max_s must be >= 0, got -1"):
        FetchConfig(backoff_max_s=-1.0)


@pytest.mark.parametrize(("argv", "said"), [
    (["--rows-per-shard", "0"], "--rows-per-shard must be >= 1, got 0"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
    (["--timeout", "-1"], "--timeout must be > 0, got -1.0"),
    (["--deadline", "0"], "--deadline must be > 0, got 0.0"),
    (["--backoff-base", "-1"], "--backoff-base must be >= 0, got -1.0"),
    (["--per-host-rate", "-1"], "--per-host-rate must be >= 0 (0: unlimited), got -1.0"),
    (["--image-size", "0"], "--image-size must be >= 1, got 0"),
    (["--max-output-pixels", "10"], "--max-output-pixels must be >= --image-size^2 = 65536, got 10"),
    (["--image-memory-budget", "8"], "--image-memory-budget must be >= 16 MiB, got 8"),
])
def test_a_setting_out_of_range_names_the_users_flag(argv, said):
    """Nested fields carry their own flags: the message names them, never a field name."""
    with pytest.raises(ValueError) as raised:
        parse(*argv)
    assert opts.with_flag_names(str(raised.value), DownloadOptions) == said


def test_nested_configs_are_argument_groups_and_defaults_are_the_engines():
    parser = argparse.ArgumentParser()
    opts.add_arguments(parser, DownloadOptions)
    groups = {g.title: [a.option_strings[0] for a in g._group_actions] for g in parser._action_groups}
    assert groups["images"][0] == "--image-size" and groups["images"][-1] == "--image-memory-budget"
    assert groups["network"][0] == "--timeout" and groups["network"][-1] == "--no-tdmrep"
    assert "--overwrite" not in groups["images"] + groups["network"]
    default = parse()
    assert default.image == ImageConfig() and default.network == FetchConfig()
    assert "--max-redirects" not in opts.option_strings(DownloadOptions)  # cli=False: not a flag


def test_timeout_sets_both_socket_timeouts_and_the_budget_is_in_mib():
    given = parse("--timeout", "2", "--image-memory-budget", "64", "--no-robots")
    assert (given.network.connect_timeout_s, given.network.read_timeout_s) == (2.0, 2.0)
    assert (FetchConfig().connect_timeout_s, FetchConfig().read_timeout_s) == (5.0, 10.0)
    assert given.image.memory_budget_bytes == 64 << 20 and given.network.respect_robots_txt is False


def test_parameters_name_every_setting_by_its_flag():
    options = parse("--pairs", "q.parquet", "--timeout", "2", "--image-memory-budget", "64", "--no-robots")
    params = parameters(options)
    flags = {f.removeprefix("--no-").removeprefix("--").replace("-", "_")
             for f in opts.option_strings(DownloadOptions)} - {"out"}
    assert set(params) == flags
    assert params["pairs"] == ["p.parquet", "q.parquet"] and params["timeout"] == 2.0
    assert params["image_memory_budget"] == 64 and params["robots"] is False and params["x_robots_tag"] is True
    assert params["deadline"] == 30.0 and params["backoff_base"] == 0.5 and params["rows_per_shard"] == 10_000
    assert parameters(parse())["timeout"] is None
