"""WARC records through FastWARC: damaged gzip members, cut files, resynchronization and record extents."""

from __future__ import annotations

import gzip
from pathlib import Path

from tests.pairs.conftest import WatBuilder, img
from tests.pairs.readers.conftest import candidates, captions, read, rejections
from wit_builder.beam.fileio import open_read
from wit_builder.pairs.readers.formats import read_pool_file
from wit_builder.pairs.readers.layouts import PoolOptions
from wit_builder.pairs.readers.records import Candidate, Rejection
from wit_builder.pairs.readers.warc_records import record_extent


def three_pages() -> WatBuilder:
    wat = WatBuilder()
    for i in range(3):
        wat.page(f"http://t.example/{i}", [img(f"{i}.jpg", f"image {i}")])
    return wat


def test_wat_truncated_gzip(tmp_path: Path) -> None:
    wat = WatBuilder()
    for i in range(3):
        wat.page(f"http://t.example/{i}", [img(f"{i}.jpg", f"image {i}")])
    path = tmp_path / "cut.warc.wat.gz"
    path.write_bytes(wat.bytes()[:-25])  # the download stopped inside the last gzip member
    items = read(path)
    assert [c for _, c in candidates(items)] == ["image 0", "image 1"]
    assert rejections(items) == [("truncated_file", wat.offsets[2])]
    path.write_bytes(wat.bytes()[: wat.offsets[2] + 12])  # cut inside the gzip header itself
    items = read(path)
    assert [c for _, c in candidates(items)] == ["image 0", "image 1"]
    assert rejections(items) == [("truncated_file", wat.offsets[2])]


def test_file_gzipped_whole_reads_every_record(tmp_path: Path) -> None:
    # `gzip file.warc.wat`: one member for all records. warcio refused such files after the first record.
    path = tmp_path / "whole.warc.wat.gz"
    path.write_bytes(gzip.compress(gzip.decompress(three_pages().bytes())))
    items = read(path)
    assert captions(items) == ["image 0", "image 1", "image 2"] and rejections(items) == []


def test_damaged_first_member_header_resumes_at_the_next(tmp_path: Path) -> None:
    wat = three_pages()
    data = bytearray(wat.bytes())
    data[0:3] = bytes(3)  # the gzip magic of the first member is gone
    path = tmp_path / "bad-start.warc.wat.gz"
    path.write_bytes(bytes(data))
    items = read(path)
    assert captions(items) == ["image 1", "image 2"]
    assert rejections(items) == [("malformed_record", 0)]
    assert items[0].detail.endswith(f"resumed at offset {wat.offsets[1]}")


def test_uncompressed_wat_resumes_at_the_next_record_line(tmp_path: Path) -> None:
    plain = gzip.decompress(three_pages().bytes())
    second = plain.index(b"WARC/1.0\r\n", 1)
    garbage = b"this line is not a WARC record\r\n\r\n"
    path = tmp_path / "plain.warc.wat"
    path.write_bytes(plain[:second] + garbage + plain[second:])
    items = read(path)
    assert captions(items) == ["image 0", "image 1", "image 2"]  # nothing lost but the garbage itself
    assert rejections(items) == [("malformed_record", second)]
    assert items[1].detail.endswith(f"resumed at offset {second + len(garbage)}")


def test_file_ending_inside_a_record_header_is_one_truncation(tmp_path: Path) -> None:
    plain = gzip.decompress(three_pages().bytes())
    third = plain.index(b"WARC/1.0\r\n", plain.index(b"WARC/1.0\r\n", 1) + 1)
    path = tmp_path / "cut.warc.wat"
    path.write_bytes(plain[: third + 60])  # inside the third record's WARC header
    items = read(path)
    # warcio read the partial header as a record: "malformed_record: WARC-Type None". It is a cut.
    assert captions(items) == ["image 0", "image 1"] and rejections(items) == [("truncated_file", third)]
    assert items[-1].detail == "the file ends inside this record's header"


def test_cut_gzip_trailer_keeps_the_whole_record(tmp_path: Path) -> None:
    path = tmp_path / "trailer.warc.wat.gz"
    path.write_bytes(three_pages().bytes()[:-4])  # the last member's length field is cut; its data is whole
    items = read(path)
    assert captions(items) == ["image 0", "image 1", "image 2"] and rejections(items) == []


def test_bad_checksum_loses_only_that_record(tmp_path: Path) -> None:
    wat = three_pages()
    data = bytearray(wat.bytes())
    data[wat.offsets[2] - 8] ^= 0xFF  # the CRC-32 of the second member: its content is not what was written
    path = tmp_path / "crc.warc.wat.gz"
    path.write_bytes(bytes(data))
    items = read(path)
    assert captions(items) == ["image 0", "image 2"]
    assert rejections(items) == [("malformed_record", wat.offsets[1])]
    assert items[1].detail.endswith(f"resumed at offset {wat.offsets[2]}")


def test_every_cut_of_a_file_reports_at_most_once(tmp_path: Path) -> None:
    """A download stopped at any byte: the records whose gzip member is whole are read, the rest is one
    report at the first incomplete member (none when the cut falls on a member boundary)."""
    wat = three_pages()
    data = wat.bytes()
    ends = wat.offsets[1:] + [len(data)]
    path = tmp_path / "cut.warc.wat.gz"
    # Every byte of the second member (a cut anywhere in one member), every 13th byte elsewhere.
    for cut in sorted({*range(wat.offsets[1], wat.offsets[2] + 1), *range(0, len(data) + 1, 13), len(data)}):
        path.write_bytes(data[:cut])
        items = read(path)
        whole = sum(end <= cut for end in ends)
        got = captions(items)
        # A member cut only in its 8-byte trailer still holds its whole record.
        assert got[:whole] == [f"image {i}" for i in range(whole)], cut
        assert len(got) <= whole + 1, cut
        if cut in [0, *ends] or len(got) == whole + 1:
            assert rejections(items) == [], cut
        else:
            assert rejections(items) == [("truncated_file", wat.offsets[whole])], cut


def test_a_reader_closed_early_closes_cleanly(tmp_path: Path) -> None:
    path = three_pages().write(tmp_path / "p.warc.wat.gz")
    items = read_pool_file(str(path), open_read, PoolOptions())
    assert isinstance(next(items), Candidate)
    items.close()  # GeneratorExit inside the record loop is not taken for damaged input


def test_record_extent_of_a_large_member_followed_by_more_data(tmp_path: Path) -> None:
    """A gzip member that inflates past one 64 KiB chunk, with bytes after it in the same read: its extent
    ends where the member ends (zlib keeps the rest in unconsumed_tail after the end: the loop once spun forever,
    so a WAT whose large last record had trailing bytes never finished)."""
    wat = WatBuilder()
    big = wat.page("http://big.example/", [img(f"/{k}.jpg", f"picture number {k}") for k in range(3000)])
    small = wat.page("http://small.example/", [img("a.jpg", "x")])
    path = tmp_path / "big.warc.wat.gz"
    path.write_bytes(wat.bytes() + b"trailing junk")
    with open(path, "rb") as fh:
        assert record_extent(fh, big) == ("whole", small)
    (tmp_path / "one.warc.wat.gz").write_bytes(wat.bytes()[:small] + b"trailing junk")
    items = read(tmp_path / "one.warc.wat.gz")
    assert len(candidates(items)) == 3000
    assert [r.reason for r in items if isinstance(r, Rejection) and r.is_bad] == ["malformed_record"]  # the junk
