"""Reproducible tar streams (wit_builder.core.tar_writer): the same members give the same bytes, with fixed
metadata, in the order given, written without seeking."""

from __future__ import annotations

import io
import tarfile

from wit_builder.core.tar_writer import write_members

MEMBERS = [("000010002.jpg", b"\xff\xd8jpeg"), ("000010002.txt", "a café".encode()), ("000010001.json", b"{}")]


class _NoSeek(io.BytesIO):
    """A stream that cannot seek, like an object store's upload."""

    def seekable(self) -> bool:
        return False

    def seek(self, *args: object) -> int:
        raise io.UnsupportedOperation("seek")

    def tell(self) -> int:
        raise io.UnsupportedOperation("tell")


def test_the_same_members_give_the_same_bytes_with_fixed_metadata_in_the_order_given():
    first, second = io.BytesIO(), _NoSeek()
    assert write_members(first, MEMBERS, mtime=0) == 3
    assert write_members(second, iter(MEMBERS), mtime=0) == 3  # any iterable, any stream that only writes
    assert first.getvalue() == second.getvalue()
    with tarfile.open(fileobj=io.BytesIO(first.getvalue())) as tar:
        assert tar.getnames() == [name for name, _ in MEMBERS]
        for info, (_, data) in zip(tar.getmembers(), MEMBERS, strict=True):
            assert (info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname) == (0, 0o644, 0, 0, "", "")
            assert tar.extractfile(info).read() == data
    later = io.BytesIO()
    write_members(later, MEMBERS, mtime=1_700_000_000)
    assert later.getvalue() != first.getvalue()  # the mtime is the caller's, not the clock's


def test_no_members_is_an_empty_tar():
    out = io.BytesIO()
    assert write_members(out, [], mtime=0) == 0
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        assert tar.getnames() == []
