"""Files through Beam's FileSystems (wit_builder.beam.fileio): patterns that must match files, globs, folders,
atomic writes that leave nothing half-written, JSON and parquet that give the same bytes for the same content, and
reads that name the file they failed on."""

from __future__ import annotations

import gzip
import hashlib
import json
import os

import pyarrow as pa
import pytest

from wit_builder.beam import fileio


def test_patterns_expand_to_sorted_unique_files_and_name_what_matches_nothing(tmp_path):
    for name in ("b.parquet", "a.parquet", "c.csv"):
        (tmp_path / name).write_bytes(b"x")
    found = fileio.expand_patterns([str(tmp_path / "*.parquet"), str(tmp_path / "a.parquet"), str(tmp_path / "c*")])
    assert found == [str(tmp_path / n) for n in ("a.parquet", "b.parquet", "c.csv")]
    with pytest.raises(FileNotFoundError, match=r"--pool '.*none\*' matches no file"):
        fileio.expand_patterns([str(tmp_path / "*.csv"), str(tmp_path / "none*")], what="--pool")


def test_a_globs_folders_are_left_out_and_a_folder_alone_is_named(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.parquet").write_bytes(b"x")
    assert fileio.expand_patterns([str(tmp_path / "*")]) == [str(tmp_path / "a.parquet")]
    with pytest.raises(FileNotFoundError, match=r"is a folder, not a file: name the files in it .*sub/\*"):
        fileio.expand_patterns([str(tmp_path / "sub")])


def test_match_crosses_folders_with_two_stars_and_finds_nothing_quietly(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/b/deep.json", "a/mid.json", "top.json"):
        (tmp_path / name).write_text("{}")
    assert sorted(fileio.match(str(tmp_path / "**" / "*.json"))) == [str(tmp_path / "a" / "b" / "deep.json"),
                                                                    str(tmp_path / "a" / "mid.json")]
    assert fileio.match(str(tmp_path / "*.json")) == [str(tmp_path / "top.json")]
    assert fileio.match(str(tmp_path / "none-*")) == []


def test_makedirs_exists_delete_and_paths(tmp_path):
    folder = str(tmp_path / "x" / "y")
    fileio.makedirs(folder)
    fileio.makedirs(folder)  # already there: nothing to do
    assert fileio.exists(folder) and os.path.isdir(folder)
    files = [fileio.join(folder, name) for name in ("1.txt", "2.txt")]
    for path in files:
        fileio.write_bytes(path, b"1")
    fileio.delete([])
    fileio.delete(files[:1])
    assert not fileio.exists(files[0]) and fileio.exists(files[1])
    assert fileio.join("gs://bucket/run", "raw", "00001.tar") == "gs://bucket/run/raw/00001.tar"
    assert fileio.local_path_or_none("gs://bucket/run") is None
    assert fileio.local_path_or_none("out") == os.path.abspath("out")


def test_an_atomic_write_appears_whole_or_not_at_all(tmp_path):
    path = tmp_path / "plan.json"
    with fileio.atomic_create(str(path)) as f:
        f.write(b"first")
        assert not path.exists()  # nothing under the name until the block ends
    assert path.read_bytes() == b"first"
    with pytest.raises(RuntimeError, match="disk full"), fileio.atomic_create(str(path)) as f:
        f.write(b"half of the second")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"first"  # the earlier file is untouched
    fileio.write_bytes(str(path), b"second")  # an existing file is replaced
    assert path.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]  # no temporary left behind


def test_json_is_written_the_same_way_every_time_and_strict(tmp_path):
    path = str(tmp_path / "stats.json")
    fileio.write_json(path, {"b": [1, 2], "a": {"é": float("inf"), "n": float("nan")}})
    text = (tmp_path / "stats.json").read_text(encoding="utf-8")
    assert text == '{\n  "a": {\n    "n": "nan",\n    "é": "inf"\n  },\n  "b": [\n    1,\n    2\n  ]\n}\n'
    assert fileio.read_json(path) == json.loads(text)
    fileio.write_json(path, {"a": {"n": float("nan"), "é": float("inf")}, "b": [1, 2]})  # same object, other order
    assert (tmp_path / "stats.json").read_text(encoding="utf-8") == text


def test_a_file_that_is_not_the_json_expected_is_named(tmp_path):
    truncated = tmp_path / "plan.json"
    truncated.write_text('{"settings": ')
    with pytest.raises(ValueError, match=r"plan.json: not a JSON file"):
        fileio.read_json(str(truncated))
    (tmp_path / "latin1.json").write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(ValueError, match=r"latin1.json: not a JSON file"):
        fileio.read_json(str(tmp_path / "latin1.json"))
    (tmp_path / "list.json").write_text("[1, 2]")
    assert fileio.read_json(str(tmp_path / "list.json")) == [1, 2]
    with pytest.raises(ValueError, match=r"list.json: expected a JSON object, found list"):
        fileio.read_json_object(str(tmp_path / "list.json"))


def test_parquet_round_trip_gives_the_same_bytes_and_casts_to_a_schema(tmp_path):
    table = pa.table({"uid": ["a", "b"], "n": pa.array([1, 2], pa.int32())})
    first, second = str(tmp_path / "1.parquet"), str(tmp_path / "2.parquet")
    fileio.write_parquet(first, table)
    fileio.write_parquet(second, table)
    assert (tmp_path / "1.parquet").read_bytes() == (tmp_path / "2.parquet").read_bytes()
    assert fileio.read_parquet(first).equals(table)
    wide = pa.schema([("uid", pa.string()), ("n", pa.int64())])
    assert fileio.read_parquet(first, schema=wide).schema == wide


def test_reads_see_the_stored_bytes_and_hash_them_in_blocks(tmp_path):
    path = tmp_path / "part-0.jsonl.gz"
    data = gzip.compress(b'{"url": "http://x/1.jpg"}\n' * 1000)
    path.write_bytes(data)
    with fileio.open_read(str(path)) as f:
        assert f.read() == data  # not decompressed: callers choose their own decompression
    assert fileio.sha256_file(str(path), chunk=100) == hashlib.sha256(data).hexdigest()


def test_a_counts_hand_over_is_read_sorted_as_ints_and_removed(tmp_path):
    path = tmp_path / "_sizes.json"
    path.write_text(json.dumps({"00001": 3, "00000": 4.0}))
    taken = fileio.take_counts(str(path))
    assert list(taken.items()) == [("00000", 4), ("00001", 3)] and all(type(n) is int for n in taken.values())
    assert not path.exists()
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="_sizes.json"):
        fileio.take_counts(str(path))
