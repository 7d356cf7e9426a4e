"""Stage 3's pure plan rules (wit_builder.download.plan), without Beam or network."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wit_builder.beam import fileio
from wit_builder.download import plan as download_plan
from wit_builder.download.host_shards import HostPlanner
from wit_builder.download.options import FetchConfig, ImageConfig


def test_shard_specs_map_global_rows_to_files_and_rows():
    urls = [f"https://host{i % 3}.example.org/{i}.jpg" for i in range(10)]
    planner = HostPlanner()
    planner.add(urls[:6])   # file a: rows 0-5
    planner.add(urls[6:])   # file b: rows 6-9
    specs = download_plan.shard_specs(["a.parquet", "b.parquet"], [0, 6],
                                      ((p.chain, p.rows) for p in planner.shards(2)))
    members = sorted(m for s in specs for m in s.members)
    assert members == [(0, r) for r in range(6)] + [(1, r) for r in range(4)]  # every row once
    assert [s.shard_id for s in specs] == list(range(len(specs))) and all(s.rows <= 2 for s in specs)
    for spec in specs:  # each host has more rows than a shard holds: its shards hold only its urls
        hosts = {urls[(0, 6)[f] + r].split("/")[2] for f, r in spec.members}
        assert len(hosts) == 1
    with pytest.raises(ValueError, match="do not match 2 input files"):
        download_plan.shard_specs(["a.parquet", "b.parquet"], [0], [])


def test_row_group_selection_reads_only_the_groups_holding_the_rows(tmp_path):
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"url": [f"https://x.example/{i}.jpg" for i in range(100)]}), path, row_group_size=16)
    pf = pq.ParquetFile(path)
    sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
    targets = [3, 17, 18, 95]
    groups, positions = download_plan.row_group_selection(sizes, targets)
    assert groups == [0, 1, 5]
    table = pf.read_row_groups(groups, columns=["url"])
    assert table.take(positions).column("url").to_pylist() == [f"https://x.example/{i}.jpg" for i in targets]
    assert download_plan.row_group_selection(sizes, []) == ([], [])
    with pytest.raises(ValueError, match="row 100 is outside a file of 100 rows"):
        download_plan.row_group_selection(sizes, [5, 100])


def test_output_settings_leave_out_speed_only_settings_and_read_back_as_json():
    settings = download_plan.output_settings("native", ImageConfig(), FetchConfig(per_host_rate=3.0, retries=1))
    assert settings["engine"] == "native" and settings["network"]["retries"] == 1
    for group in ("image", "network"):
        assert not set(download_plan.SPEED_ONLY_SETTINGS) & set(settings[group])
    faster = download_plan.output_settings("native", ImageConfig(), FetchConfig(per_host_rate=9.0, retries=1))
    assert faster == settings  # the speed-only settings never make a rerun differ


def test_plan_differences_name_every_changed_leaf():
    old = {"inputs": ["a.parquet"], "settings": {"image": {"image_size": 256, "encode_quality": 95}}}
    new = {"inputs": ["a.parquet", "b.parquet"], "settings": {"image": {"image_size": 384, "encode_quality": 95}},
           "rows": 10}
    assert download_plan.plan_differences(old, new) == [
        "inputs: was ['a.parquet'], now ['a.parquet', 'b.parquet']",
        "rows: was '(not recorded)', now 10",
        "settings.image.image_size: was 256, now 384"]
    assert download_plan.plan_conflict("raw/", old, old) is None
    message = download_plan.plan_conflict("raw/", old, new)
    assert message is not None and message.startswith("raw/ holds raw shards made with other inputs or settings")
    # the refusal names the flags the user typed, not plan.json's fields
    assert "--image-size: was 256, now 384" in message and "settings.image" not in message
    assert "--pairs (its files): was ['a.parquet']" in message


def test_a_difference_is_named_by_its_flag():
    flag = download_plan.flag_of_difference
    assert flag("settings.network.respect_robots_txt: was True, now False") == "--no-robots: was True, now False"
    assert flag("settings.image.memory_budget_bytes: was 1, now 2") == "--image-memory-budget (in bytes): was 1, now 2"
    assert flag("settings.network.read_timeout_s: was 1, now 2") == "--timeout (read): was 1, now 2"
    assert flag("rows_per_shard: was 1, now 2") == "--rows-per-shard: was 1, now 2"
    assert flag("k1: was 1, now 2") == "k1: was 1, now 2"  # no flag sets it: said as recorded
    many_old = {f"k{i}": i for i in range(10)}
    many_new = {f"k{i}": i + 1 for i in range(10)}
    assert "; and 2 more)" in (download_plan.plan_conflict("raw/", many_old, many_new) or "")


def test_plan_document_records_inputs_cut_and_settings():
    specs = [download_plan.ShardSpec(0, 0, ("a", "b"), ((0, 0), (1, 0))),
             download_plan.ShardSpec(1, 0, ("a", "b"), ((0, 1),))]
    settings = download_plan.output_settings("native", ImageConfig(), FetchConfig())
    plan = download_plan.plan_document(("a", "b"), 2, specs, settings)
    assert plan == {"inputs": ["a", "b"], "rows_per_shard": 2, "shards": 2, "rows": 3, "settings": settings}
    assert download_plan.plan_conflict("raw/", plan, download_plan.plan_document(("a", "b"), 3, specs, settings)) \
        is not None


def test_settings_with_an_unbounded_limit_are_strict_json(tmp_path):
    """--max-aspect-ratio defaults to inf: plan.json held `Infinity`, which strict JSON parsers refuse."""
    settings = download_plan.output_settings("native", ImageConfig(max_aspect_ratio=float("inf")), FetchConfig())
    assert settings["image"]["max_aspect_ratio"] == "inf"
    path = str(tmp_path / "plan.json")
    fileio.write_json(path, {"settings": settings, "nan": float("nan"), "low": [float("-inf")]})

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    back = json.loads((tmp_path / "plan.json").read_text(), parse_constant=refuse)
    assert back == {"settings": settings, "nan": "nan", "low": ["-inf"]}
    assert download_plan.output_settings("native", ImageConfig(max_aspect_ratio=float("inf")), FetchConfig()) == \
        back["settings"]  # a rerun compares equal to what was written


def test_output_settings_name_the_settings_as_the_engines_read_them():
    """plan.json's keys are those every earlier plan.json holds (a rerun compares them): the memory budget in
    bytes, --timeout as the two socket timeouts it sets, no speed-only setting."""
    settings = download_plan.output_settings("native", ImageConfig(memory_budget_mib=64), FetchConfig(timeout_s=2.0))
    assert set(settings) == {"engine", "image", "network"}
    assert set(settings["image"]) == {"image_size", "resize_mode", "encode_format", "encode_quality", "min_image_size",
                                      "max_aspect_ratio", "max_image_pixels", "max_output_pixels",
                                      "memory_budget_bytes", "jpeg_draft"}
    assert set(settings["network"]) == {"connect_timeout_s", "read_timeout_s", "deadline_s", "max_bytes", "retries",
                                        "backoff_base_s", "backoff_max_s", "max_redirects", "user_agent_contact",
                                        "allow_private_networks", "allow_link_local", "respect_robots_txt",
                                        "respect_x_robots_tag", "respect_tdmrep"}
    assert settings["image"]["memory_budget_bytes"] == 64 << 20
    assert settings["network"]["connect_timeout_s"] == settings["network"]["read_timeout_s"] == 2.0
    defaults = download_plan.output_settings("native", ImageConfig(), FetchConfig())["network"]
    assert (defaults["connect_timeout_s"], defaults["read_timeout_s"]) == (5.0, 10.0)
