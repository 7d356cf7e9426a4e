"""Local files written temp-then-rename (trainer.atomic): the final name holds a whole file or the previous one."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.atomic import write_atomic


def test_the_file_appears_under_its_name_only_when_written_whole(tmp_path):
    path = tmp_path / "loss.png"
    seen: list[Path] = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        assert not path.exists()
        tmp.write_bytes(b"first")

    write_atomic(path, write)
    assert path.read_bytes() == b"first"
    (tmp,) = seen
    # beside the target, hidden, and with its suffix: writers that pick the format from it (matplotlib) still work
    assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.suffix == ".png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png"]


def test_a_failed_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("previous")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(str(path), fail)
    assert path.read_text() == "previous"
    write_atomic(str(path), lambda tmp: tmp.write_text("new"))  # a str path too; replaces the previous file
    assert path.read_text() == "new"


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_temporary(tmp_path):
    import errno

    from trainer.atomic import WriteFailed

    def full(tmp: Path) -> None:
        tmp.write_bytes(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteFailed, match=r"cannot write .*checkpoint\.pt: No space left on device \(\d+ MiB free"):
        write_atomic(tmp_path / "checkpoint.pt", full)

    def torch_full(tmp: Path) -> None:  # how torch.save reports it
        tmp.write_bytes(b"x")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0\nfile write failed")

    with pytest.raises(WriteFailed, match="checkpoint.pt"):
        write_atomic(tmp_path / "checkpoint.pt", torch_full)
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_of_dead_processes_are_removed_and_nothing_else(tmp_path):
    import os
    import subprocess
    import sys

    from trainer.atomic import remove_stale_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = [tmp_path / f".checkpoint.tmp-{dead_pid}.pt", tmp_path / f".metrics.tmp-{dead_pid}.jsonl"]
    live = tmp_path / f".checkpoint.tmp-{os.getppid()}.pt"  # a live process's write in progress
    foreign = [tmp_path / f".notes.tmp-{dead_pid}.txt", tmp_path / "checkpoint.pt", tmp_path / ".checkpoint.pt"]
    for path in [*stale, live, *foreign]:
        path.write_bytes(b"x")
    removed = remove_stale_temporaries(tmp_path, ["checkpoint.pt", "metrics.jsonl"])
    assert sorted(removed) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted([live, *foreign])


def test_strict_json_never_writes_nan():
    import json
    import math

    from wit_builder.core import strict_json

    text = strict_json.dumps({"loss": math.nan, "lr": [1.0, math.inf], "n": 3, "ok": True})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard {c}")) == {
        "loss": None, "lr": [1.0, None], "n": 3, "ok": True}


def test_check_out_file_refuses_a_folder_and_a_trailing_slash(tmp_path):
    """``wit eval --out DIR`` / ``wit export --out DIR``: refused before work, suggesting a file in it; a path that
    ends with a slash names a folder even when it does not exist yet (it was written as a file named like it)."""
    from trainer.atomic import check_out_file

    with pytest.raises(ValueError, match=rf"--out '{tmp_path}' is a folder: name a file to write, e.g. "
                                         rf"{tmp_path}/eval.json"):
        check_out_file(str(tmp_path), example="eval.json")
    with pytest.raises(ValueError, match="is a folder"):
        check_out_file(f"{tmp_path}/new/")
    assert not (tmp_path / "new").exists()
    check_out_file(f"{tmp_path}/new/eval.json")  # a file below a folder still to be made: fine
