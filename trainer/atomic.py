"""Local files written temp-then-rename, so a killed process never leaves a half file under the final name."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call ``write`` with a hidden temporary path beside ``path``, then rename it onto ``path``.

    The temporary name keeps the suffix, so writers that pick the format from it (matplotlib) still work.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    write(tmp)
    os.replace(tmp, path)
