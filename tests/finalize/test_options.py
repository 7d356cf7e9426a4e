"""``wit finalize``'s settings (wit_builder.finalize.options): the flags generated from the dataclass, and
settings out of range refused naming the user's flag."""

from __future__ import annotations

import pytest

from wit_builder import cli
from wit_builder.core import options
from wit_builder.finalize.options import OPTIONS, FinalizeOptions


def test_the_flags_and_their_defaults():
    assert options.option_strings(OPTIONS) == ["--raw", "--out", "--overwrite", "--samples-per-shard",
                                               "--per-query-cap", "--phash-distance", "--decontaminate", "--seed",
                                               "--uids", "--gallery-samples"]
    assert options.defaults(OPTIONS) == {"--overwrite": False, "--samples-per-shard": 10_000, "--per-query-cap": None,
                                         "--phash-distance": 4, "--decontaminate": None, "--seed": None,
                                         "--uids": None, "--gallery-samples": 12}


def test_settings_out_of_range_name_the_flag():
    FinalizeOptions(raw=("r",), out="o", samples_per_shard=1, phash_distance=0)
    for settings, said in (({"samples_per_shard": 0}, "--samples-per-shard must be >= 1, got 0"),
                           ({"per_query_cap": 0}, "--per-query-cap must be >= 1, got 0"),
                           ({"phash_distance": 64}, "--phash-distance: pHash distance must be in 0..63, got 64")):
        with pytest.raises(ValueError, match=said):
            FinalizeOptions(raw=("r",), out="o", **settings)


@pytest.mark.parametrize(("extra", "said"), [(["--samples-per-shard", "0"], "--samples-per-shard must be >= 1"),
                                             (["--phash-distance", "-1"], "--phash-distance: ")])
def test_the_command_refuses_them_before_any_work(extra, said, tmp_path, capsys):
    assert cli.main(["finalize", "--raw", str(tmp_path), "--out", str(tmp_path / "o"), *extra]) == 2
    assert said in capsys.readouterr().err and not (tmp_path / "o").exists()
