"""Shards: resolving --shards (directories, globs, brace patterns), sample counts from sizes.json or
img2dataset's _stats.json, malformed sizes.json named with the file, raw samples grouped by key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import webdataset as wds

from tests.trainer.conftest import jpeg_bytes, write_sized
from trainer.data import make_plan
from trainer.shards import IMAGE_KEYS, DataError, first_member, raw_samples, resolve_shards, sample_where, shard_sizes
from wit_builder.core.errors import InputError


def test_resolve_shards_and_sizes(tmp_path, numbered):
    shards_dir, _ = numbered
    assert [Path(p).name for p in resolve_shards(str(shards_dir))] == [f"{i:05d}.tar" for i in range(4)]
    assert len(resolve_shards(f"{shards_dir}/{{00001..00002}}.tar")) == 2
    assert len(resolve_shards(f"{shards_dir}/*.tar")) == 4
    assert sum(shard_sizes(resolve_shards(str(shards_dir))).values()) == 64
    with pytest.raises(DataError, match="does not exist"):
        resolve_shards(f"{shards_dir}/{{00003..00004}}.tar")
    with pytest.raises(DataError, match="holds no .tar"):
        resolve_shards(str(tmp_path))
    # img2dataset's layout: no sizes.json, a {shard}_stats.json with "successes" beside each tar.
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(2):
        shutil.copy(shards_dir / f"{i:05d}.tar", raw / f"{i:05d}.tar")
        (raw / f"{i:05d}_stats.json").write_text(json.dumps({"count": 20, "successes": 16}))
    assert shard_sizes(resolve_shards(str(raw))) == {str(raw / "00000.tar"): 16, str(raw / "00001.tar"): 16}
    (raw / "00001_stats.json").unlink()
    assert shard_sizes(resolve_shards(str(raw))) is None


@pytest.mark.parametrize("content,problem", [
    ('{"00000": "16"}', "the sample count of '00000' must be a non-negative integer, got '16'"),
    ('{"00000": -1}', "got -1"),
    ('{"00000": 16.5}', "got 16.5"),
    ('{"00000": true}', "got True"),
    ("[16]", "expected a JSON object of shard name -> sample count, got a list"),
    ('{"00000": 16', "not valid JSON"),
])
def test_a_malformed_sizes_json_is_a_clear_error_naming_the_file(tmp_path, content, problem):
    write_sized(tmp_path, [16])
    (tmp_path / "sizes.json").write_text(content)
    with pytest.raises(DataError) as raised:
        make_plan(str(tmp_path), batch_size=8, image_size=16, workers=0)
    assert str(tmp_path / "sizes.json") in str(raised.value) and problem in str(raised.value)


def test_raw_samples_group_members_by_key_and_skip_unreadable_shards(tmp_path):
    with wds.TarWriter(str(tmp_path / "00000.tar")) as sink:
        sink.write({"__key__": "a", "png": jpeg_bytes(0), "txt": "first"})
        sink.write({"__key__": "b", "jpg": jpeg_bytes(1), "txt": "second"})
    (tmp_path / "00001.tar").write_bytes(b"not a tar" * 50)
    errors: list[Exception] = []
    samples = list(raw_samples(iter(resolve_shards(str(tmp_path))), lambda e: errors.append(e) or True))
    assert [(s["__key__"], s["txt"]) for s in samples] == [("a", b"first"), ("b", b"second")]
    assert errors  # the broken shard was reported to the handler, not raised
    assert first_member(samples[0], IMAGE_KEYS) == jpeg_bytes(0)  # png: the first image key the sample holds
    assert first_member(samples[0], ("webp",)) is None
    assert sample_where(samples[1]) == f"{tmp_path / '00000.tar'}:b"
    assert issubclass(DataError, InputError)  # the wit command prints it as one line, exit 2


def test_a_brace_range_that_names_too_many_shards_is_refused(monkeypatch):
    """``{00000..99999999}`` (a digit too many) names 10^8 shards: refused in one line once the bound is passed,
    never expanded into memory (it ended in a MemoryError); a range within the bound still expands."""
    from trainer import shards

    monkeypatch.setattr(shards, "MAX_SHARD_URLS", 5000)  # the real bound (1,000,000) takes a minute to pass
    with pytest.raises(DataError, match=r"names more than 5,000 shards; check its brace ranges"):
        resolve_shards("gs://bucket/wit/{00000..99999999}.tar")
    assert len(resolve_shards("gs://bucket/wit/{00000..00999}.tar::gs://bucket/b/{0..9}.tar")) == 1010


def test_a_huge_brace_range_is_refused_at_the_real_bound_before_any_expansion():
    """braceexpand is not lazy (itertools.product holds a range whole): ``{00000..99999999}`` at the real
    1,000,000 bound took 53 s and 7.7 GB before its first name. Its count is computed first, so it is refused at
    once; nested and multiplied ranges too."""
    import time

    start = time.monotonic()
    for spec in ("/data/{00000..99999999}.tar", "gs://b/{0..999}{0..999}{0..9}.tar",
                 "gs://b/{a,{0..9999}{0..9999}}.tar", "gs://b/{0..9}.tar::gs://b/{0..999999}.tar"):
        with pytest.raises(DataError, match=r"names more than 1,000,000 shards"):
            resolve_shards(spec)
    assert time.monotonic() - start < 5
    with pytest.raises(DataError, match=r"unbalanced braces in '/data/\{0..1.tar'"):  # was a braceexpand traceback
        resolve_shards("/data/{0..1.tar")


@pytest.mark.parametrize("pattern", [
    "a", "{0..9}", "x{00..10..3}y", "{5..-2..2}", "{a..e}", "{Z..b..2}", "{e..A}", "{c..B..3}", "{a,b}{1..3}",
    "{a,{b,c}{1..2}}z",
    "{}", "{x}", "{,}", "a{b{1..2},c}", r"\{1,2\}{3,4}", "{1..3}{A,B}{,x}", "{a{1..2}x,b}", "{{1..2}}",
])
def test_brace_count_matches_braceexpand(pattern):
    import braceexpand

    from trainer.shards import _brace_count

    assert _brace_count(pattern) == len(list(braceexpand.braceexpand(pattern)))


def test_a_named_pipe_among_the_shards_is_refused_before_work(tmp_path):
    """A FIFO among the shards (a folder's *.tar, a glob, a brace pattern, a plain path) blocked ``wit train`` and
    ``wit eval --retrieval`` forever; it is refused by name."""
    import os

    (tmp_path / "00000.tar").write_bytes(b"")
    os.mkfifo(tmp_path / "00001.tar")
    for spec in (str(tmp_path), f"{tmp_path}/*.tar", f"{tmp_path}/{{00000..00001}}.tar", f"{tmp_path}/00001.tar"):
        with pytest.raises(DataError, match=r"00001.tar' is a named pipe \(FIFO\), not a regular file"):
            resolve_shards(spec)
    assert resolve_shards(f"{tmp_path}/00000.tar") == [f"{tmp_path}/00000.tar"]
