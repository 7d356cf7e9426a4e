"""The --out folder of a download (wit_builder.download.raw_folder): complete shards, the plan check before any
work, --overwrite's clean-up, stats.json kept when only its timings would change."""

from __future__ import annotations

import json

import pytest

from schemas import stats as stats_schema
from wit_builder.core.errors import InputError
from wit_builder.download import raw_folder


def test_a_shard_is_complete_with_its_three_files_and_leftovers_go(tmp_path):
    for name in ("00003.tar", "00003.parquet"):
        (tmp_path / name).write_bytes(b"x")
    assert not raw_folder.shard_complete(str(tmp_path), 3)
    (tmp_path / "00003_stats.json").write_text("{}")
    assert raw_folder.shard_complete(str(tmp_path), 3)
    (tmp_path / "00004.tar.tmp-dead").write_bytes(b"half")
    (tmp_path / "00005.tar.tmp-live").write_bytes(b"half")
    raw_folder.remove_leftovers(str(tmp_path), 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "00003.parquet", "00003.tar", "00003_stats.json", "00005.tar.tmp-live"]


def test_the_plan_check_resumes_the_same_plan_and_refuses_another_until_overwrite(tmp_path):
    out = str(tmp_path / "raw")
    plan = {"inputs": ["a.parquet"], "rows_per_shard": 2, "settings": {"image": {"image_size": 64}}}
    assert raw_folder.check_plan(out, plan, overwrite=False) is False  # nothing there yet: a fresh start
    (tmp_path / "raw").mkdir()
    raw_folder.write_plan(out, plan)
    assert raw_folder.check_plan(out, plan, overwrite=False) is True
    assert raw_folder.check_plan(out, plan, overwrite=True) is True  # the same plan resumes even so
    other = {**plan, "settings": {"image": {"image_size": 32}}}
    with pytest.raises(raw_folder.RawFolderError, match="--image-size: was 64, now 32") as refused:
        raw_folder.check_plan(out, other, overwrite=False)
    assert isinstance(refused.value, InputError) and "--overwrite" in str(refused.value)
    assert raw_folder.check_plan(out, other, overwrite=True) is False

    (tmp_path / "raw" / "plan.json").unlink()
    (tmp_path / "raw" / "00000.parquet").write_bytes(b"x")
    with pytest.raises(raw_folder.RawFolderError, match="holds raw shards but no plan.json"):
        raw_folder.check_plan(out, plan, overwrite=False)
    assert raw_folder.check_plan(out, plan, overwrite=True) is False

    (tmp_path / "raw" / "plan.json").write_text('{"inputs": [')
    with pytest.raises(ValueError, match="plan.json: not a JSON file"):
        raw_folder.check_plan(out, plan, overwrite=True)


def test_remove_run_deletes_the_runs_files_only(tmp_path):
    names = ["00000.tar", "00000.parquet", "00000_stats.json", "00001.tar.tmp-x", "plan.json", "stats.json",
             "stats.json.tmp-y", "notes.txt", "other"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    removed = raw_folder.remove_run(str(tmp_path))
    assert len(removed) == 7 and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "other"]


def stats_doc(rows: int, seconds: float) -> dict:
    return stats_schema.envelope("download", inputs=[], parameters={}, counts={"rows": rows}, outputs=[],
                                 seconds=seconds, details={"max_aspect_ratio": float("inf")})


def test_a_rerun_that_downloaded_nothing_keeps_stats_json_when_only_timings_differ(tmp_path):
    out, path = str(tmp_path), tmp_path / "stats.json"
    raw_folder.write_stats(out, stats_doc(3, 1.0), unchanged_run=True)
    before = path.read_bytes()
    raw_folder.write_stats(out, stats_doc(3, 9.0), unchanged_run=True)
    assert path.read_bytes() == before
    raw_folder.write_stats(out, stats_doc(3, 9.0), unchanged_run=False)  # this run downloaded: rewritten
    assert json.loads(path.read_text())["timings"]["seconds"] == 9.0
    raw_folder.write_stats(out, stats_doc(4, 2.0), unchanged_run=True)  # the counts changed
    assert json.loads(path.read_text())["counts"]["rows"] == 4


def test_error_kinds_are_read_once(tmp_path):
    (tmp_path / raw_folder.ERROR_KINDS_FILE).write_text('{"HTTP 404 from <url>": 2}')
    assert raw_folder.take_error_kinds(str(tmp_path)) == {"HTTP 404 from <url>": 2}
    assert not (tmp_path / raw_folder.ERROR_KINDS_FILE).exists()
