"""Stage 4's inputs (wit_builder.finalize.inputs): what the flags name, resolved and checked before any work."""

from __future__ import annotations

import contextlib
import io
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wit_builder.beam import fileio
from wit_builder.download.raw_shards import RawInputError
from wit_builder.finalize import inputs as finalize_inputs
from wit_builder.finalize import trace
from wit_builder.finalize.options import FinalizeOptions


def test_resolve_reads_the_raw_footers_and_finds_the_evaluation_images(raw, tmp_path):
    options = FinalizeOptions(raw=(str(raw.root),), out=str(tmp_path / "o"), decontaminate=str(raw.eval_dir))
    inputs = finalize_inputs.resolve(options)
    files = tuple(sorted(str(p) for p in raw.root.glob("*.parquet")))
    assert inputs.raw_files == files and inputs.rows == len(raw.rows)
    assert inputs.raw_names == tuple((f, os.path.basename(f)[: -len(".parquet")]) for f in files)
    assert inputs.eval_files == (str(raw.eval_dir / "launch" / "rocket.png"), str(raw.eval_dir / "retina.jpg"))
    assert inputs.seed == 0 and inputs.match_rule is None  # no plan.json: nothing traced
    assert not (tmp_path / "o").exists()  # nothing is written before the run


def test_resolve_names_the_flag_and_the_file_of_bad_input(raw, tmp_path):
    def resolve(raw_dir, **settings):
        return finalize_inputs.resolve(FinalizeOptions(raw=(str(raw_dir),), out=str(tmp_path / "o"), **settings))

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="matches no file"):
        resolve(empty)
    with pytest.raises(ValueError, match="--decontaminate .*: no image files found there"):
        resolve(raw.root, decontaminate=str(empty))
    with pytest.raises(ValueError, match="--out .* is the folder of the raw shard"):
        finalize_inputs.resolve(FinalizeOptions(raw=(str(raw.root),), out=str(raw.root)))
    no_rows = tmp_path / "no_rows"
    no_rows.mkdir()
    pq.write_table(pq.read_table(raw.root / "00000.parquet").slice(0, 0), no_rows / "00000.parquet")
    with pytest.raises(RawInputError, match="the raw parquets hold no rows"):
        resolve(no_rows)
    garbage = tmp_path / "garbage"
    shutil.copytree(raw.root, garbage)
    (garbage / "00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(RawInputError, match="00001.parquet: not a readable parquet file"):
        resolve(garbage)


def test_the_checks_before_work_read_footers_not_whole_files(raw, tmp_path, monkeypatch):
    """Row counts come from the footer and the match rule from its one column: a raw parquet is never read whole
    before the run."""
    path = tmp_path / "00000.parquet"
    table = pq.read_table(raw.root / "00000.parquet")
    big = pa.array([os.urandom(200_000) for _ in range(table.num_rows)])  # bulk the checks need not read
    pq.write_table(table.append_column("match_rule", pa.array(["metaclip"] * table.num_rows))
                   .append_column("bulk", big), path, compression="none")
    read: list[int] = []
    real_open_read = fileio.open_read

    class Counted(io.BufferedReader):
        def read(self, size=-1):
            data = super().read(size)
            read.append(len(data))
            return data

    @contextlib.contextmanager
    def counting_open_read(name):
        with real_open_read(name) as f, Counted(f.raw) as counted:
            yield counted

    monkeypatch.setattr(fileio, "open_read", counting_open_read)
    assert finalize_inputs.parquet_rows(str(path)) == table.num_rows
    assert trace.raw_match_rules([str(path)]) == {str(path): {"metaclip"}}
    assert 0 < sum(read) < path.stat().st_size // 10


def test_raw_patterns_and_out_apart_from_raw():
    join = lambda a, b: f"{a.rstrip('/')}/{b}"  # noqa: E731
    assert finalize_inputs.raw_patterns(["runs/a", "b/00001.parquet", "c/*.parquet", "gs://x/run"], join) == [
        "runs/a/*.parquet", "b/00001.parquet", "c/*.parquet", "gs://x/run/*.parquet"]
    assert finalize_inputs.raw_parquet_files(["a/0.tar", "a/0.parquet"], ["a/*"]) == ["a/0.parquet"]
    with pytest.raises(FileNotFoundError, match="--raw a/\\*: no .parquet files"):
        finalize_inputs.raw_parquet_files(["a/0.tar"], ["a/*"])
    finalize_inputs.check_out_apart_from_raw("final", ["raw/00000.parquet"], os.path.realpath)
    with pytest.raises(ValueError, match="--out raw/ is the folder of the raw shard raw/00000.parquet"):
        finalize_inputs.check_out_apart_from_raw("raw/", ["raw/00000.parquet"], os.path.realpath)
    with pytest.raises(ValueError):
        finalize_inputs.check_out_apart_from_raw(".", ["00000.parquet"], os.path.realpath)
    assert finalize_inputs.eval_images(["e/b.PNG", "e/a.jpg", "e/notes.txt", "e/c.webp"]) == [
        "e/a.jpg", "e/b.PNG", "e/c.webp"]


def pairs_stats(seed, cap=100, stage="build-pairs"):
    return {"stage": stage, "parameters": {"balance": "hard", "per_query_cap": cap, "seed": seed}}


def test_rebalance_seed_must_be_stage_twos_seed():
    seed = finalize_inputs.rebalance_seed
    assert seed(7, 50, {"pairs/stats.json": pairs_stats(7)}) == 7
    assert seed(None, 50, {"pairs/stats.json": pairs_stats(7)}) == 7     # the default follows stage 2
    assert seed(0, None, {"pairs/stats.json": pairs_stats(7)}) == 0      # no re-cap: the seed is not used
    assert seed(None, None, {"pairs/stats.json": pairs_stats(7)}) == 0
    assert seed(0, 50, {"pairs/stats.json": pairs_stats(7, cap=None)}) == 0  # stage 2 did not cap
    assert seed(None, 50, {"pairs/stats.json": pairs_stats(7, cap=None)}) == 0
    assert seed(0, 50, {"raw/stats.json": pairs_stats(7, stage="download")}) == 0
    assert seed(5, 50, {}) == 5 and seed(None, 50, {}) == 0              # untraceable: nothing to compare
    with pytest.raises(ValueError, match=r"--seed 0 differs from the seed 7 .*\(pairs/stats.json\): pass --seed 7"):
        seed(0, 50, {"pairs/stats.json": pairs_stats(7)})
    for given in (3, None):
        with pytest.raises(ValueError, match=r"different seeds \(3 in a/stats.json, 7 in b/stats.json\)"):
            seed(given, 50, {"a/stats.json": pairs_stats(3), "b/stats.json": pairs_stats(7)})
