"""Local files written temp-then-rename, so a killed process never leaves a half file under the final name, and
a failed write (a full disk, an exception in the writer) leaves no temporary behind either."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from wit_builder.core.errors import StageFailed

# ".NAME.tmp-PID.EXT": the temporary of NAME.EXT written by process PID (see ``write_atomic``)
_TEMPORARY = re.compile(r"^\.(?P<stem>.+)\.tmp-(?P<pid>\d+)(?P<suffix>\.[^.]*)?$")
# The errors that mean "this place cannot take the file": one line naming the path, not a traceback
_OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)


class WriteFailed(StageFailed):
    """An output file could not be written (disk full, quota, read-only, no permission): exit 1, one line."""


def temporary_path(path: Path) -> Path:
    """The hidden temporary beside ``path`` this process writes first; it keeps the suffix, so writers that pick
    the format from it (matplotlib) still work."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call ``write`` with a hidden temporary path beside ``path``, then rename it onto ``path``. On any failure
    the temporary is removed; a full disk, a quota, a read-only or forbidden place raises WriteFailed naming
    ``path`` (torch.save reports a full disk as a RuntimeError "file write failed": also WriteFailed)."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and e.errno in _OUTPUT_ERRNOS or _torch_write_failed(e):
            raise WriteFailed(f"cannot write {path}: {_reason(e, path)}") from e
        raise


def _torch_write_failed(e: BaseException) -> bool:
    return isinstance(e, RuntimeError) and "write failed" in str(e)


def _reason(e: BaseException, path: Path) -> str:
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(path.parent).free
        reason += f" ({free / 2**20:.0f} MiB free there)"
    return reason


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: Path, names: Iterable[str]) -> list[Path]:
    """Remove the temporaries of ``names`` (files ``write_atomic`` writes into ``folder``) that a killed or failed
    process left: ``.NAME.tmp-PID.EXT`` whose PID is not a live process. Nothing else is touched. Returns what
    was removed."""
    wanted = {(Path(n).stem, Path(n).suffix) for n in names}
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if not match or (match["stem"], match["suffix"] or "") not in wanted or not entry.is_file():
            continue
        if _alive(int(match["pid"])) and int(match["pid"]) != os.getpid():
            continue
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()
            removed.append(entry)
    return removed


def check_out_file(path: str, flag: str = "--out", example: str = "results.json") -> None:
    """ValueError, before any work, when ``path`` cannot become a file: it is a folder or ends with a slash (one
    it would be written as a file named like the folder meant), a path above it is a file, or the nearest existing
    folder above it cannot be written. ``example``: the file name the message suggests inside such a folder."""
    target = Path(os.path.abspath(path))
    if target.is_dir() or path.endswith(("/", os.sep)):
        raise ValueError(f"{flag} {path!r} is a folder: name a file to write, e.g. {os.path.join(path, example)}")
    probe = target.parent
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{flag} {path!r} is below the file {probe}, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path!r}: cannot write in {probe} (permission denied)")
