"""Tar shards read as streams (trainer.tarstream, trainer.shards.raw_samples): every member of a good shard exactly
as Python's tarfile reads it (ustar, pax and GNU long names); a damaged header in the middle of a shard is
reported with the shard and byte offset and skipped to the next valid header, so the samples after it are
still read and the loader counts the sample that lost a member as ``damaged_tar`` (before, tarfile took the
damaged header for the end of the archive and the rest of the shard vanished as ``missing``)."""

from __future__ import annotations

import io
import logging
import tarfile
from pathlib import Path

import pytest
import webdataset as wds

from tests.trainer.conftest import jpeg_bytes, write_shards
from trainer.data import Loader, make_plan
from trainer.shards import raw_samples
from trainer.tarstream import TruncatedTar, group_samples, tar_members
from trainer.tokenizer import Tokenizer


def _members(data: bytes) -> tuple[list[tuple[str, bytes]], list[tuple[int, str]]]:
    damage: list[tuple[int, str]] = []
    members = list(tar_members(io.BytesIO(data), lambda offset, message: damage.append((offset, message))))
    return members, damage


def _tarfile_members(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isreg()]


def _stream_mode(path: Path) -> list[tarfile.TarInfo]:
    """The members tarfile reads in stream mode, as webdataset does."""
    with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        return list(tar)


def _shard(path: Path, n: int, px: int = 16) -> list[tarfile.TarInfo]:
    with wds.TarWriter(str(path)) as sink:
        for i in range(n):
            sink.write({"__key__": f"{i:04d}", "jpg": jpeg_bytes(i, px), "txt": f"sample {i}"})
    with tarfile.open(path) as tar:
        return tar.getmembers()


def _damage_header(path: Path, member: tarfile.TarInfo) -> int:
    """Break the checksum of ``member``'s own ustar header (the block just before its data); returns its offset."""
    data = bytearray(path.read_bytes())
    header = member.offset_data - tarfile.BLOCKSIZE
    data[header + 148:header + 156] = b"7777777\0"
    path.write_bytes(bytes(data))
    return header


def test_good_shards_read_exactly_as_tarfile_reads_them(tmp_path):
    write_shards(tmp_path, per_class=4, samples_per_shard=16, image_px=24)  # stage 4's layout: jpg, txt, json
    for shard in sorted(tmp_path.glob("*.tar")):
        data = shard.read_bytes()
        members, damage = _members(data)
        assert members == _tarfile_members(data) and not damage and len(members) >= 48


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_long_names_and_every_tar_format(fmt):
    out = io.BytesIO()
    names = ["a" * 150 + "/0001.jpg", "0001.txt", "dir/0002.jpg"] if fmt != tarfile.USTAR_FORMAT else ["0001.jpg"]
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for i, name in enumerate(names):
            body = bytes([i]) * (700 + i)
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        directory = tarfile.TarInfo("dir")
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
    members, damage = _members(out.getvalue())
    assert members == _tarfile_members(out.getvalue()) and [n for n, _ in members] == names and not damage


def test_a_damaged_header_mid_shard_loses_one_member_not_the_rest(tmp_path, caplog):
    shard = tmp_path / "00000.tar"
    members = _shard(shard, 10)
    assert len(_stream_mode(shard)) == len(members)
    offset = _damage_header(shard, next(m for m in members if m.name == "0003.jpg"))
    with pytest.raises(tarfile.ReadError):  # what webdataset's reader (tarfile in stream mode) does with it
        _stream_mode(shard)
    errors: list[Exception] = []
    with caplog.at_level(logging.WARNING):
        samples = list(raw_samples(iter([str(shard)]), lambda e: errors.append(e) or True))
    assert [s["__key__"] for s in samples] == [f"{i:04d}" for i in range(10)] and not errors
    assert "jpg" not in samples[3] and samples[3]["txt"] == b"sample 3" and samples[3]["__damaged__"]
    assert all("jpg" in s and "txt" in s for i, s in enumerate(samples) if i != 3)
    assert f"{shard}: damaged tar header" in caplog.text
    assert f"at byte {offset}; skipped to the next valid header" in caplog.text


def test_a_damaged_pax_header_costs_nothing(tmp_path):
    shard = tmp_path / "00000.tar"
    members = _shard(shard, 4)
    data = bytearray(shard.read_bytes())
    pax = next(m for m in members if m.name == "0001.txt").offset  # webdataset writes a pax header first
    assert pax < next(m for m in members if m.name == "0001.txt").offset_data - tarfile.BLOCKSIZE
    data[pax + 148:pax + 156] = b"1234567\0"
    names, damage = _members(bytes(data))
    assert [n for n, _ in names] == [m.name for m in members] and [o for o, _ in damage] == [pax]


def test_the_loader_counts_damaged_samples_and_trains_on_the_rest(tmp_path, caplog):
    members = _shard(tmp_path / "00000.tar", 12, px=24)
    _damage_header(tmp_path / "00000.tar", next(m for m in members if m.name == "0005.txt"))
    _damage_header(tmp_path / "00000.tar", next(m for m in members if m.name == "0009.jpg"))
    (tmp_path / "sizes.json").write_text('{"00000.tar": 12}')
    tokenizer = Tokenizer.train(["sample"] * 10, vocab_size=300, context_length=8)
    loader = Loader(make_plan(str(tmp_path), batch_size=1, image_size=16, workers=0, shuffle_buffer=1), tokenizer)
    with caplog.at_level(logging.WARNING):
        batches = list(loader.epoch_batches())
    assert len(batches) == 10 and loader.totals == {"damaged_tar": 2}
    report = loader.reports[-1]
    assert report["left_out"] == {"damaged_tar": 2} and report["samples_trained"] == 10
    assert report["samples_planned"] == 12 and "missing" not in report["left_out"]
    assert caplog.text.count("00000.tar: damaged tar header") == 2


def test_garbage_after_the_end_and_truncation(tmp_path):
    shard = tmp_path / "00000.tar"
    members = _shard(shard, 2)
    data = shard.read_bytes()
    cut = next(m for m in members if m.name == "0001.jpg").offset_data + 10
    names, damage = _members(data + b"\x00" * 4096 + b"junk" * 256)  # zero padding, then garbage
    assert len(names) == 4 and [o for o, _ in damage] == [len(data) + 4096]
    with pytest.raises(TruncatedTar, match="ends inside member '0001.jpg'"):
        _members(data[:cut])
    with pytest.raises(TruncatedTar, match="inside a header block"):
        _members(data[:1024 + 100])
    # a truncated stream still yields the sample read before the cut, then the error
    damage_seen: list = []
    grouped = group_samples(tar_members(io.BytesIO(data[: len(data) - 1700]), lambda *a: damage_seen.append(a)),
                            "x.tar")
    assert next(grouped)["__key__"] == "0000"
    with pytest.raises(TruncatedTar):
        list(grouped)
