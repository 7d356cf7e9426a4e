"""Who may write into an output folder (``--out``): the run marker, the one-writer lock, our temporaries.

- **Run marker** (:data:`MARKER`, ``.wit-run.json``): the first file a command writes into its ``--out``,
  naming the command (``{"command": "build-pairs", "format": 1}``). A folder that holds anything but our own
  bookkeeping (names starting with ``.wit-``) and no marker was not written by us: every command refuses it
  (:func:`ownership_problem`) unless ``--overwrite``; so does a folder whose marker names another command
  (``wit finalize --out out/raw``). The marker, not a file-name pattern, decides: a user's
  ``pairs-2023-final.parquet`` looks like our output and is still never touched without ``--overwrite``.
- **Lock** (:class:`FolderLock`, ``.wit-lock``): one writer per folder. An exclusive ``flock(2)`` on the lock
  file, which holds the writer's pid, host and command for the message a second writer gets. The kernel drops
  the lock when its process dies, however it dies, so a stale lock file of a dead process (``kill -9``, a
  crashed host's NFS client) is taken over with a note, never waited on. Local folders only: object stores
  (``gs://``, ``s3://``) have no advisory locks, and there the caller must keep to one writer per ``--out``
  itself (``docs/deploy.md``).
- **Temporaries** (:func:`is_temporary`): a file we write goes to ``NAME.tmp-<32 hex digits>`` first and is
  renamed when complete (``wit_builder.beam.fileio.atomic_create``); a killed run leaves them, and the next run
  of the same folder (holding the lock, inside a folder with our marker) deletes them. Input globs never
  match them.

No Beam: the launcher (``wit_builder/beam/launcher.py``) lists and writes the folder and calls these.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
from collections.abc import Iterable
from typing import Any

MARKER = ".wit-run.json"
LOCK = ".wit-lock"
OURS_PREFIX = ".wit-"  # our bookkeeping in a folder (marker, lock, the demo's step files): not a user's file
MARKER_FORMAT = 1
TEMPORARY = re.compile(r"\.tmp-[0-9a-f]{32}$")  # fileio.atomic_create's names: NAME.tmp-<uuid4 hex>


def is_temporary(name: str) -> bool:
    """Whether the file name (or path) is one of our temporaries (``NAME.tmp-<32 hex digits>``)."""
    return TEMPORARY.search(name) is not None


def marker_document(command: str) -> dict[str, Any]:
    """What :data:`MARKER` holds: the command (``build-pairs``) and the marker's format. No time or host: a rerun
    writes the same bytes."""
    return {"command": command, "format": MARKER_FORMAT, "written_by": "wit_builder"}


def marker_command(text: str | bytes | None) -> str | None:
    """The command a marker file's content names; ``""`` for a marker that is not ours to read (damaged,
    another format), None when there is no marker (``text`` None)."""
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return ""
    command = doc.get("command") if isinstance(doc, dict) else None
    return command if isinstance(command, str) else ""


def foreign_names(names: Iterable[str]) -> list[str]:
    """The entries of a folder that are not our bookkeeping (``.wit-*``), sorted."""
    return sorted(n for n in names if not n.startswith(OURS_PREFIX))


def ownership_problem(out: str, command: str, names: Iterable[str], marker: str | None) -> str | None:
    """Why ``wit COMMAND`` must not write into ``out`` without ``--overwrite``, or None when it may.

    ``names``: the folder's entries (none when it does not exist); ``marker``: :func:`marker_command` of its
    marker (None without one). It may when the folder is empty but for our bookkeeping, or its marker names
    ``command``.
    """
    if marker == command:
        return None
    foreign = foreign_names(names)
    if marker is None and not foreign:
        return None
    if marker:
        return (f"--out {out} is the output folder of 'wit {marker}' (run marker {MARKER}); 'wit {command}' would "
                f"overwrite or delete its files: name another --out, or pass --overwrite to let 'wit {command}' "
                "take the folder over")
    shown = ", ".join(repr(n) for n in foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    what = "a run marker it cannot read" if marker == "" else f"no run marker ({MARKER})"
    return (f"--out {out} holds files that wit did not write ({shown}) and {what}; name a new or empty folder, "
            f"or pass --overwrite to let 'wit {command}' write there (files named like its outputs are replaced)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


# The lock descriptors this process holds. A forked child (multiprocessing, torch's DataLoader workers, Beam's
# worker pools) inherits them, and an flock lives while any copy is open: a child that outlives its killed parent
# would keep the folder locked. Children close their copies at once; the parent's lock is unaffected.
_HELD: set[int] = set()


def _close_in_child() -> None:
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


class LockedError(RuntimeError):
    """Another live writer holds the folder's lock; the message names it and what to do."""


class FolderLock:
    """An exclusive lock on a local folder for one run (``with FolderLock(out, command): ...``).

    :meth:`acquire` raises :class:`LockedError` naming the holder (pid, host, command) when another process holds
    it; ``taken_over`` says whose stale lock file it replaced (None when there was none). The lock file is
    removed on :meth:`release`. Why ``flock`` and not create-exclusive: a create-exclusive file outlives a killed
    process and needs a pid check that cannot be made for another host; the kernel releases an ``flock`` on
    any exit.
    """

    def __init__(self, folder: str, command: str) -> None:
        self.path = os.path.join(folder, LOCK)
        self.command = command
        self.taken_over: dict[str, Any] | None = None
        self._fd: int | None = None

    def _holder(self) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
            if isinstance(doc, dict):
                return doc
        return {}

    def acquire(self) -> FolderLock:
        """Take the lock (non-blocking); LockedError when a live process holds it."""
        for _ in range(16):  # the file can be removed by its releasing holder between open and flock: retry
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                holder = self._holder()
                who = ", ".join(f"{k} {holder[k]}" for k in ("command", "pid", "host") if k in holder)
                raise LockedError(f"--out {os.path.dirname(self.path)} is being written by another run"
                                  f"{f' ({who})' if who else ''}; wait for it to end or name another --out "
                                  f"(its lock: {self.path})") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # we locked a file its holder had just removed: open the new one
                os.close(fd)
                continue
            previous = self._holder()
            if previous:
                self.taken_over = previous
            me = {"command": self.command, "pid": os.getpid(), "host": socket.gethostname()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me, sort_keys=True) + "\n").encode(), 0)
            self._fd = fd
            _HELD.add(fd)
            return self
        raise LockedError(f"could not lock {self.path}: it keeps being replaced")

    def stale_note(self) -> str | None:
        """A line saying whose stale lock was taken over (a killed run), or None."""
        held = self.taken_over
        if not held:
            return None
        pid, host = held.get("pid"), held.get("host")
        state = ("no longer running" if isinstance(pid, int) and host == socket.gethostname() and not _alive(pid)
                 else "its lock was released")
        return f"note: took over the lock of an earlier run ({held.get('command')}, pid {pid}, host {host}: {state})"

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _HELD.discard(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # before unlocking: a waiting writer re-opens the path (see acquire)
        os.close(fd)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
