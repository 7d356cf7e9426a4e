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
