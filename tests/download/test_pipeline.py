"""Stage 3's composites (wit_builder.download.pipeline) on small in-memory inputs: the counting step on given
shard outcomes, and the whole stage over a folder whose shards are complete (read back, nothing fetched)."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import BEAM_IN_PROCESS
from wit_builder.beam import counting, fileio
from wit_builder.download import raw_folder, raw_shards, stats
from wit_builder.download.options import DownloadOptions
from wit_builder.download.pipeline import Download, DownloadShards, _CountShardFn
from wit_builder.download.plan import ShardSpec


def shard_stats(shard_id: int, statuses: list[str]) -> dict:
    samples = [raw_shards.RawSample({"key": f"{shard_id}{i}", "status": s, "bytes": 5 if s == "success" else None,
                                     "error_message": None if s == "success" else f"{s} at http://h/{i}"})
               for i, s in enumerate(statuses)]
    return raw_shards.shard_stats(shard_id, samples, "native")


def complete_folder(out) -> list[ShardSpec]:
    """Two complete shards in ``out`` (their three files), as specs of one plan."""
    specs = []
    shards = [["success", "blocked"], ["failed_to_download", "failed_to_download", "success"]]
    for shard_id, statuses in enumerate(shards):
        tar, parquet, stats_path = raw_folder.shard_paths(str(out), shard_id)
        with fileio.atomic_create(tar) as f:
            raw_shards.write_tar(f, [])
        fileio.write_bytes(parquet, b"unused")
        fileio.write_json(stats_path, shard_stats(shard_id, statuses))
        specs.append(ShardSpec(shard_id, shard_id, ("pairs.parquet",), tuple((0, r) for r in range(len(statuses)))))
    return specs


def test_counting_step_counts_every_shard_and_passes_on_its_error_kinds():
    outcomes = [stats.ShardOutcome(shard_stats(0, ["success", "blocked"]), downloaded=True),
                stats.ShardOutcome(shard_stats(1, ["blocked", "filtered"]), downloaded=False)]
    with BeamTestPipeline(options=PipelineOptions(BEAM_IN_PROCESS)) as p:
        counted = (p | beam.Create(outcomes)
                   | beam.ParDo(_CountShardFn()).with_outputs(counting.COUNTS, main="error_kinds"))
        assert_that(counted[counting.COUNTS] | beam.CombinePerKey(sum), equal_to([
            ("shards", 2), ("rows", 4), ("bytes_downloaded", 5), ("status_success", 1), ("status_blocked", 2),
            ("status_filtered", 1), ("status_failed_to_download", 0), ("status_failed_to_decode", 0),
            ("shards_downloaded", 1), ("rows_downloaded", 2), ("rows_retried", 0), ("rows_recovered", 0),
            *((f"blocked_{r}", 2 if r == "other" else 0) for r in raw_shards.BLOCK_REASONS)]), label="Counts")
        assert_that(counted.error_kinds, equal_to([("blocked at <url>", 1), ("blocked at <url>", 1),
                                                   ("filtered at <url>", 1)]), label="ErrorKinds")


def test_complete_shards_are_read_back_not_downloaded(tmp_path):
    specs = complete_folder(tmp_path)
    options = DownloadOptions(pairs=("pairs.parquet",), out=str(tmp_path))
    with BeamTestPipeline(options=PipelineOptions(BEAM_IN_PROCESS)) as p:
        outcomes = p | beam.Create(specs) | DownloadShards(options)
        assert_that(outcomes | beam.Map(lambda o: (o.stats["shard"], o.stats["count"], o.downloaded)),
                    equal_to([("00000", 2, False), ("00001", 3, False)]))


def test_the_stage_writes_the_counts_of_every_shard_of_the_plan(tmp_path):
    specs = complete_folder(tmp_path)
    options = DownloadOptions(pairs=("pairs.parquet",), out=str(tmp_path))
    with beam.Pipeline(options=PipelineOptions(BEAM_IN_PROCESS)) as p:
        _ = p | Download(specs, options)
    counts = counting.read_counts(str(tmp_path), stats.COUNT_NAMES)
    assert counts == dict.fromkeys(stats.COUNT_NAMES, 0) | {
        "shards": 2, "rows": 5, "bytes_downloaded": 10, "status_success": 2, "status_blocked": 1,
        "status_failed_to_download": 2, "blocked_other": 1}  # blocked rows written without a reason
    assert raw_folder.take_error_kinds(str(tmp_path)) == {"blocked at <url>": 1, "failed_to_download at <url>": 2}


def test_an_empty_plan_still_writes_its_counts(tmp_path):
    options = DownloadOptions(pairs=("pairs.parquet",), out=str(tmp_path))
    with beam.Pipeline(options=PipelineOptions(BEAM_IN_PROCESS)) as p:
        _ = p | Download([], options)
    assert counting.read_counts(str(tmp_path), stats.COUNT_NAMES) == dict.fromkeys(stats.COUNT_NAMES, 0)
    assert raw_folder.take_error_kinds(str(tmp_path)) == {}
