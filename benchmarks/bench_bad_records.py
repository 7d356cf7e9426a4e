"""Memory and time of build-pairs on a pool that is almost all bad records (issue 23: 1M blank TSV lines took
2.25 GB and 179 s when every bad record was gathered in one list).

Writes a TSV pool of one good row and N blank lines (each one a ``malformed_record``) and two queries, then runs
``wit build-pairs`` on it in a child process for each code tree given (``--code``: this checkout by default;
name another checkout, e.g. the main branch, to compare side by side) and prints, per tree: peak RSS of the
child (``wait4``'s ``ru_maxrss``), CPU seconds, wall seconds, the bad records counted and listed.

    python benchmarks/bench_bad_records.py --lines 1000000 --code . --code /work/main
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_inputs(folder: Path, lines: int) -> tuple[Path, Path]:
    """(queries folder, pool file): queries ``cat`` and ``dog``; a TSV of one matching row and ``lines`` blank
    lines."""
    sys.path.insert(0, str(ROOT))
    from tests.pairs.conftest import write_queries

    queries = write_queries(folder / "q", ["cat", "dog"])
    pool = folder / "blank.tsv"
    with open(pool, "wb") as f:
        f.write(b"url\tcaption\nhttp://x.example/a.jpg\ta cat\n")
        f.write(b"\n" * lines)
    return queries, pool


def run(code: Path, queries: Path, pool: Path, out: Path) -> dict:
    """One ``wit build-pairs`` in a child process with ``code`` first on PYTHONPATH; its figures."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "wit_builder.cli", "build-pairs", "--queries", str(queries),
                              "--pool", str(pool), "--out", str(out)], cwd=code, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - started
    stats = json.loads((out / "stats.json").read_text())
    listed = len((out / "bad_records.jsonl").read_bytes().splitlines())
    return {"code": str(code), "exit": os.waitstatus_to_exitcode(status), "peak_rss_mb": usage.ru_maxrss / 1024,
            "cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall,
            "bad_records_counted": stats["counts"]["bad_records"], "bad_records_listed": listed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="blank lines in the pool")
    parser.add_argument("--code", action="append", type=Path, help="a checkout to run (repeatable; default: this one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-bad-records-") as tmp:
        folder = Path(tmp)
        queries, pool = write_inputs(folder, args.lines)
        for i, code in enumerate(args.code or [ROOT]):
            result = run(code.resolve(), queries, pool, folder / f"out-{i}")
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
