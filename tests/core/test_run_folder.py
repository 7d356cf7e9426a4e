"""The output folder's rules (wit_builder.core.run_folder): whose folder it is (the run marker), one writer at a
time (the lock, stale locks of dead processes taken over), and which names are our temporaries."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wit_builder.core import run_folder
from wit_builder.core.run_folder import LOCK, MARKER, FolderLock, LockedError


def test_temporaries_are_recognised_by_our_exact_naming() -> None:
    hexa = "0123456789abcdef" * 2
    assert run_folder.is_temporary(f"out/pairs-00000-of-00001.parquet.tmp-{hexa}")
    assert run_folder.is_temporary(f"gs://b/o/stats.json.tmp-{hexa}")
    for name in ("pairs.tmp-1234", f"x.tmp-{hexa}.parquet", f"x.tmp-{hexa[:-1]}", f"x.tmp-{hexa.upper()}",
                 "my.tmp-notes.txt", "pairs-2023-final.parquet"):
        assert not run_folder.is_temporary(name), name


@pytest.mark.parametrize(("names", "marker", "allowed"), [
    ([], None, True),                                    # a new folder
    ([".wit-demo-started.json", LOCK], None, True),      # only our bookkeeping
    ([MARKER, "stats.json"], "build-pairs", True),       # our own earlier run
    (["pairs-2023-final.parquet"], None, False),         # a user's file that looks like ours
    ([MARKER, "00000.tar"], "download", False),          # another command's folder
    ([MARKER, "x"], "", False),                          # a marker we cannot read
])
def test_ownership(names: list[str], marker: str | None, allowed: bool) -> None:
    problem = run_folder.ownership_problem("out/p", "build-pairs", names, marker)
    assert (problem is None) is allowed
    if problem is not None:
        assert problem.startswith("--out out/p ") and "--overwrite" in problem


def test_ownership_messages_name_what_is_there() -> None:
    user = run_folder.ownership_problem("o", "finalize", [f"{i:05d}.tar" for i in range(20)] + ["DATASET.md"], None)
    assert user is not None and "'00000.tar', '00001.tar', '00002.tar' and 18 more" in user and MARKER in user
    other = run_folder.ownership_problem("o", "finalize", [MARKER], "download")
    assert other is not None and "the output folder of 'wit download'" in other


def test_marker_document_round_trip_and_damaged_markers() -> None:
    text = json.dumps(run_folder.marker_document("finalize"))
    assert run_folder.marker_command(text) == "finalize"
    assert run_folder.marker_command(None) is None
    assert run_folder.marker_command("{not json") == ""
    assert run_folder.marker_command("[1]") == ""


def test_a_second_writer_is_refused_naming_the_first(tmp_path: Path) -> None:
    with FolderLock(str(tmp_path), "download") as first:
        assert first.taken_over is None
        with pytest.raises(LockedError) as refused:
            FolderLock(str(tmp_path), "download").acquire()
        message = str(refused.value)
        assert f"--out {tmp_path} is being written by another run" in message
        assert f"pid {os.getpid()}" in message and socket.gethostname() in message
    assert not (tmp_path / LOCK).exists()  # released: the file goes
    with FolderLock(str(tmp_path), "download"):  # and the folder can be taken again
        pass


def test_a_lock_held_by_another_process_is_refused(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from wit_builder.core.run_folder import FolderLock
            lock = FolderLock({str(tmp_path)!r}, "finalize").acquire()
            print("held", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=f"command finalize, pid {holder.pid}"):
            FolderLock(str(tmp_path), "finalize").acquire()
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing (SIGKILL): its lock file stays, its lock does not.
    assert json.loads((tmp_path / LOCK).read_text())["pid"] == holder.pid
    lock = FolderLock(str(tmp_path), "finalize").acquire()
    try:
        assert lock.taken_over is not None and lock.taken_over["pid"] == holder.pid
        note = lock.stale_note()
        assert note is not None and f"pid {holder.pid}" in note and "no longer running" in note
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    finally:
        lock.release()


def test_a_killed_writers_forked_children_do_not_keep_its_lock(tmp_path: Path) -> None:
    """Worker processes forked after the lock was taken (DataLoader workers, Beam's pools) inherit its descriptor;
    they must not keep the folder locked once the writer itself is killed (wit train's resume after SIGKILL)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import multiprocessing, time
            from wit_builder.core.run_folder import FolderLock
            lock = FolderLock({str(tmp_path)!r}, "train").acquire()
            child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,), daemon=False)
            child.start()
            print(child.pid, flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert holder.stdout is not None
    child = int(holder.stdout.readline())
    try:
        holder.kill()
        holder.wait()
        os.kill(child, 0)  # the child lives on
        lock = FolderLock(str(tmp_path), "train").acquire()
        assert lock.taken_over is not None and lock.taken_over["pid"] == holder.pid
        lock.release()
    finally:
        os.kill(child, 9)
