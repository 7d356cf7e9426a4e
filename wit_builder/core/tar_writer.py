"""Reproducible tar streams: the same (name, bytes) members always give the same tar bytes.

Every member gets a fixed mtime, mode 0644, uid/gid 0 and no user names, in the ustar format. Stream mode
(``w|``) never seeks, so the target may be any writable file (gs://, s3://).
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable
from typing import BinaryIO


def write_members(fileobj: BinaryIO, members: Iterable[tuple[str, bytes]], mtime: int) -> int:
    """Write ``members`` (name, bytes) in the order given; returns the member count."""
    count = 0
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = mtime
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, _BytesReader(data))
            count += 1
    return count


class _BytesReader:
    """The minimal reader tarfile.addfile needs, without copying ``data`` into a BytesIO."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size < 0 else min(len(self._view), self._pos + size)
        chunk = self._view[self._pos:end].tobytes()
        self._pos = end
        return chunk
