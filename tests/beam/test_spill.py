"""The spilled shuffles of wit_builder.beam.spill (GroupByKeySpilled, CoGroupByKeySpilled, Materialize): the same
groups as Beam's own GroupByKey/CoGroupByKey with any bucket count and flush size, files under deterministic
names, and nothing but file references crossing the shuffle. (``Spill`` itself: tests/pairs/test_pipeline.py.)"""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import BEAM_IN_PROCESS
from wit_builder.beam import spill
from wit_builder.beam.spill import CoGroupByKeySpilled, GroupByKeySpilled, Materialize, Spill, bucket_count
from wit_builder.core.errors import UsageError

PAIRS = [(f"k{i % 37}", (i, "x" * (i % 5))) for i in range(500)] + [(None, (-1, "none key"))]
OTHER = [(f"k{i}", f"other {i}") for i in range(30, 45)]


def beam_pipeline() -> BeamTestPipeline:
    return BeamTestPipeline(options=beam.options.pipeline_options.PipelineOptions(BEAM_IN_PROCESS))


def grouped(pairs) -> list[tuple]:
    groups: dict = {}
    for key, value in pairs:
        groups.setdefault(key, []).append(value)
    return [(key, sorted(values)) for key, values in groups.items()]


def _sorted_values(kv):
    return kv[0], sorted(kv[1])


def _sorted_tags(kv):
    return kv[0], {tag: sorted(values) for tag, values in kv[1].items()}


@pytest.mark.parametrize(("buckets", "flush"), [(1, 1 << 20), (7, 300)])
def test_group_by_key_spilled_gives_beams_groups_with_any_buckets_and_flushes(tmp_path, monkeypatch, buckets, flush):
    monkeypatch.setattr(spill, "FLUSH_BYTES", flush)  # 300 bytes: a flush every few elements
    folder = tmp_path / "_tmp_spill"
    with beam_pipeline() as p:
        left = p | "Left" >> beam.Create(PAIRS[:250])
        right = p | "Right" >> beam.Create(PAIRS[250:])
        out = (left, right) | GroupByKeySpilled(Spill(str(folder)), "step", buckets)
        assert_that(out | beam.Map(_sorted_values), equal_to(grouped(PAIRS)))
    files = sorted(folder.glob("step/*.bin"))
    assert files and all(len(f.stem) == 32 for f in files)  # named by a hash of their bytes
    if flush == 300:
        assert len(files) > 10
    assert not list(folder.rglob("*.tmp-*"))  # every file renamed into place


def test_group_by_key_spilled_inline_is_beams_group_by_key(tmp_path):
    with beam_pipeline() as p:
        out = p | beam.Create(PAIRS) | GroupByKeySpilled(Spill(None), "step", 3)
        assert_that(out | beam.Map(_sorted_values), equal_to(grouped(PAIRS)))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("folder", [None, "_tmp_spill"])
def test_co_group_by_key_spilled_gives_beams_join(tmp_path, monkeypatch, folder):
    monkeypatch.setattr(spill, "FLUSH_BYTES", 200)
    keys = {k for k, _ in PAIRS} | {k for k, _ in OTHER}
    expected = [(k, {"row": sorted(v for kk, v in PAIRS if kk == k), "other": sorted(v for kk, v in OTHER if kk == k)})
                for k in keys]
    with beam_pipeline() as p:
        tagged = {"row": p | "Rows" >> beam.Create(PAIRS), "other": p | "Other" >> beam.Create(OTHER)}
        out = tagged | CoGroupByKeySpilled(Spill(folder and str(tmp_path / folder)), "join", 4)
        assert_that(out | beam.Map(_sorted_tags), equal_to(expected))


def test_materialize_passes_every_element_through_files(tmp_path, monkeypatch):
    monkeypatch.setattr(spill, "FLUSH_BYTES", 100)
    values = [("a", i) for i in range(200)]
    with beam_pipeline() as p:
        out = p | beam.Create(values) | Materialize(Spill(str(tmp_path)), "wait")
        assert_that(out, equal_to(values))
    assert len(list(tmp_path.glob("wait/*.bin"))) > 5


def test_a_retried_flush_writes_the_same_file_and_equal_blobs_are_read_once_per_reference(tmp_path):
    """A retried bundle making the same bytes writes them under the same name (no second file); two flushes that
    happen to hold equal bytes share the file, and each reference is read, so nothing is lost or doubled."""
    coder = beam.coders.FastPrimitivesCoder()
    writer = spill._SpillBuckets(Spill(str(tmp_path)), "step", 0, 3, (coder, coder), None)
    refs = []
    for _ in range(2):  # the bundle, then its retry
        writer.start_bundle()
        assert not list(writer.process(("a", 1))) and not list(writer.process(("b", 2)))
        refs.append([wv.value for wv in writer.finish_bundle()])
    assert refs[0] == refs[1] and len(refs[0]) == 1 and len(list(tmp_path.glob("step/*.bin"))) == 1
    grouper = spill._GroupBucket([(coder, coder)], None)
    both = refs[0] + refs[1]  # as if both bundles had succeeded: every value twice
    groups = [kv for bucket in range(3) for kv in grouper.process(bucket, both)]
    assert sorted(groups) == [("a", [1, 1]), ("b", [2, 2])]


def test_one_reference_per_file_whatever_the_buckets(tmp_path, monkeypatch):
    """The references that cross Beam grow with the files (spilled bytes / FLUSH_BYTES), not with files x buckets:
    a flush of 1,000 elements over 500 buckets is one reference, and each bucket reads its own range of it."""
    monkeypatch.setattr(spill, "FLUSH_BYTES", 1 << 30)
    coder = beam.coders.FastPrimitivesCoder()
    writer = spill._SpillBuckets(Spill(str(tmp_path)), "step", 0, 500, (coder, coder), None)
    writer.start_bundle()
    for i in range(1000):
        assert not list(writer.process((f"k{i}", i)))
    [ref] = [wv.value for wv in writer.finish_bundle()]
    path, first, last = ref
    assert path.startswith(str(tmp_path)) and 0 <= first < last < 500
    grouper = spill._GroupBucket([(coder, coder)], None)
    got = {}
    for bucket in range(500):
        for key, values in grouper.process(bucket, [ref]):
            assert spill.hashed_bucket(coder.encode(key), 500) == bucket and key not in got
            got[key] = values
    assert got == {f"k{i}": [i] for i in range(1000)}
    assert spill._read_bucket(path, 500) == b""  # a bucket past the index: nothing, not an error


def test_shard_buckets_open_only_the_files_that_span_them(tmp_path, monkeypatch):
    """With a bucket per shard and rows arriving shard by shard, a file's index covers a few buckets, and a bucket's
    reader skips every file whose span does not hold it."""
    monkeypatch.setattr(spill, "FLUSH_BYTES", 200)
    coder = beam.coders.FastPrimitivesCoder()
    writer = spill._SpillBuckets(Spill(str(tmp_path)), "step", 0, 10, (coder, coder), lambda key: key)
    writer.start_bundle()
    refs = [ref for shard in range(10) for i in range(20) for ref in writer.process((shard, i))]
    refs += [wv.value for wv in writer.finish_bundle()]
    assert len(refs) > 10 and all(last - first <= 1 for _, first, last in refs)
    opened: list[str] = []
    read = spill._read_bucket
    monkeypatch.setattr(spill, "_read_bucket", lambda path, bucket: opened.append(path) or read(path, bucket))
    grouper = spill._GroupBucket([(coder, coder)], None)
    assert list(grouper.process(3, refs)) == [(3, list(range(20)))]
    assert 0 < len(opened) <= 3


def test_bucket_count_and_hashed_bucket():
    assert [bucket_count(n, 10) for n in (0, 1, 10, 11, 100)] == [1, 1, 1, 2, 10]
    assert spill.hashed_bucket(b"key", 7) == spill.hashed_bucket(b"key", 7) < 7
    assert len({spill.hashed_bucket(str(i).encode(), 8) for i in range(100)}) == 8


def test_a_cut_spill_file_is_an_error_not_a_short_group(tmp_path: Path):
    coder = beam.coders.FastPrimitivesCoder()
    writer = spill._SpillBuckets(Spill(str(tmp_path)), "step", 0, 1, (coder, coder), None)
    writer.start_bundle()
    list(writer.process(("a", "value")))
    [wv] = list(writer.finish_bundle())
    path = next(tmp_path.glob("step/*.bin"))
    whole = path.read_bytes()
    for cut in (whole[:-2], whole[:12], whole[:3]):  # inside the blob, inside the index, inside its span
        path.write_bytes(cut)
        with pytest.raises(ValueError, match="changed during the run"):
            list(spill._GroupBucket([(coder, coder)], None).process(0, [wv.value]))


def test_a_symbolic_link_named_like_the_spill_folder_is_refused_and_its_target_kept(tmp_path: Path):
    # `ln -s ~/photos OUT/_tmp_spill` then `wit finalize --overwrite` ended in a traceback (rmtree on a link)
    target = tmp_path / "photos"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / spill.SPILL_DIR).symlink_to(target)
    with pytest.raises(UsageError, match="is a symbolic link .*remove the link"):
        spill.remove_spill(str(out))
    assert (target / "keep.txt").read_text() == "precious"
    (out / spill.SPILL_DIR).unlink()
    (out / spill.SPILL_DIR / "sketches").mkdir(parents=True)
    assert spill.remove_spill(str(out)) and not (out / spill.SPILL_DIR).exists()
