"""What lies behind the raw shards (wit_builder.finalize.trace). The match rule travels from build-pairs (pairs'
``match_rule`` column, stats.json) through download's plan.json to finalize (stats.json ``details.match_rule``)
and the trainer; inputs that mix rules are refused. Stage 2's stats.json is found the same way (the seed)."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import BEAM_IN_PROCESS, SPACE_CAP, RawFixture
from trainer.data import make_plan
from trainer.shards import DataError, check_match_rules
from wit_builder.cli import main
from wit_builder.finalize.trace import folder_of, pairs_stats_behind, raw_match_rules


def _pairs(path: Path, rule: str | None) -> Path:
    columns = {"uid": ["0" * 32], "url": ["https://x.example/a.jpg"], "caption": ["a dog"], "queries": [["dog"]]}
    if rule is not None:
        columns["match_rule"] = [rule]
    pq.write_table(pa.table(columns), path)
    return path


@pytest.fixture
def raw_fixture(raw: RawFixture) -> Path:
    return raw.root


def _download_folder(source: Path, root: Path, rule: str | None) -> Path:
    """A copy of the raw fixture whose plan.json names one pairs file matched under ``rule``."""
    raw = root / "raw"
    shutil.copytree(source, raw)
    pairs = _pairs(root / "pairs-00000-of-00001.parquet", rule)
    (raw / "plan.json").write_text(json.dumps({"inputs": [str(pairs)], "rows_per_shard": 10}))
    return raw


def test_finalize_refuses_raw_shards_of_two_rules(raw_fixture: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    a = _download_folder(raw_fixture, tmp_path / "a", "normalized")
    b = _download_folder(raw_fixture, tmp_path / "b", "metaclip")
    argv = ["finalize", "--raw", str(a), "--raw", str(b), "--out", str(tmp_path / "out"), *BEAM_IN_PROCESS]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "different match rules" in err and "metaclip:" in err and "normalized:" in err
    assert not (tmp_path / "out" / "stats.json").exists()
    # Pairs from before the column existed count as the default rule: they mix with metaclip ones too.
    legacy = _download_folder(raw_fixture, tmp_path / "legacy", None)
    first = str(sorted(legacy.glob("*.parquet"))[0])
    assert raw_match_rules([first]) == {str(tmp_path / "legacy" / "pairs-00000-of-00001.parquet"): {None}}
    assert main(["finalize", "--raw", str(legacy), "--raw", str(b), "--out", str(tmp_path / "o2"),
                 *BEAM_IN_PROCESS]) == 2


def test_finalize_records_the_rule_and_the_trainer_refuses_to_mix(raw_fixture: Path, tmp_path: Path) -> None:
    raw = _download_folder(raw_fixture, tmp_path / "m", "metaclip")
    out = tmp_path / "final"
    assert main(["finalize", "--raw", str(raw), "--out", str(out), "--per-query-cap", str(SPACE_CAP),
                 "--samples-per-shard", "4", *BEAM_IN_PROCESS]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["details"]["match_rule"] == stats["parameters"]["match_rule"] == "metaclip"

    other = tmp_path / "final-normalized"
    shutil.copytree(out, other)
    stats["details"]["match_rule"] = "normalized"
    (other / "stats.json").write_text(json.dumps(stats))
    assert check_match_rules(sorted(str(p) for p in out.glob("*.tar"))) == "metaclip"
    with pytest.raises(DataError, match="different match rules"):
        make_plan(f"{out}/*.tar::{other}/*.tar", batch_size=1, image_size=16, workers=0)


def test_trainer_ignores_folders_without_a_recorded_rule(tmp_path: Path) -> None:
    for name in ("x", "y"):
        (tmp_path / name).mkdir()
        with tarfile.open(tmp_path / name / "00000.tar", "w"):
            pass
    (tmp_path / "x" / "stats.json").write_text(json.dumps({"details": {"match_rule": "metaclip"}}))
    assert check_match_rules([str(tmp_path / "x" / "00000.tar"), str(tmp_path / "y" / "00000.tar")]) == "metaclip"


def test_stage_2_stats_are_traced_through_plan_json(tmp_path: Path) -> None:
    assert folder_of("gs://b/raw/00000.parquet") == "gs://b/raw" and folder_of("00000.parquet") == "."
    pairs_dir, raw_dir = tmp_path / "pairs", tmp_path / "raw"
    pairs_dir.mkdir()
    raw_dir.mkdir()
    assert pairs_stats_behind([str(raw_dir / "00000.parquet")]) == {}  # no plan.json: nothing traced
    (raw_dir / "plan.json").write_text(json.dumps({"inputs": [str(pairs_dir / "pairs-00000-of-00001.parquet")]}))
    assert pairs_stats_behind([str(raw_dir / "00000.parquet")]) == {}  # no stats.json beside the pairs
    stage2 = {"stage": "build-pairs", "parameters": {"seed": 7, "per_query_cap": 100}}
    (pairs_dir / "stats.json").write_text(json.dumps(stage2))
    raw_files = [str(raw_dir / "00000.parquet"), str(raw_dir / "00001.parquet")]
    assert pairs_stats_behind(raw_files) == {str(pairs_dir / "stats.json"): stage2}
    (pairs_dir / "stats.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object.*the seed of stage 2 is unknown"):
        pairs_stats_behind(raw_files)
