"""Peak memory and time of ``wit finalize`` (in-process FnApiRunner) on generated raw shards: distinct images at
several sizes, and one cluster of near-identical images (the same picture with one or two pixels changed, as
re-encoded copies, logos and placeholders are in a crawl).

    .venv/bin/python benchmarks/bench_finalize_scale.py [--distinct 10000,40000,160000] [--cluster 5000,20000]
        [--code DIR] [--out out/bench_finalize_scale]
    (make bench-scale runs it after the build-pairs benchmark)

Raw shards are written as ``wit download`` writes them (``schemas.download.RAW_ROWS`` parquet + a tar of
``KEY.png``), ``--rows-per-shard`` rows each, with sha256 and imagehash's pHash of the stored PNG filled in, so the
run measures finalize's selection and writing, not hashing. Distinct images are random 32x32 noise (random
pHashes); a cluster's members are one 32x32 picture with one pixel (two past 3,072 members) changed, so every
member has its own sha256 and all pHashes lie within the default distance of one another.

The sampler of ``bench_scale.py`` keeps the kernel's peak RSS (VmHWM) of the ``wit`` process (the launcher: on
FnApiRunner it runs everything) and the largest sum of RSS over the whole process tree at one sample (every 0.2 s).
``--code`` runs another checkout's ``wit`` (e.g. the main branch before linear clusters) on the same inputs, for a
side-by-side. Results go to stdout and OUT/results.json; with two cluster sizes the growth exponent
log(t2/t1)/log(n2/n1) of time and memory is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import resource
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_scale import Sampler  # noqa: E402  (also marks this process tree for the sampler)

from schemas.download import RAW_ROWS  # noqa: E402
from wit_builder.core.dedup import image_phash  # noqa: E402

SIDE = 32


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def images(kind: str, n: int, seed: int):
    """``n`` PNGs: distinct noise images, or one picture with one or two pixels changed per member."""
    rng = np.random.default_rng(seed)
    if kind == "distinct":
        for _ in range(n):
            yield _png(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8))
        return
    # A picture of a few smooth blobs (random 4x4 upscaled): strong low frequencies, so a one-pixel change
    # leaves the pHash (a DCT of the 32x32 grey image) as it is or a bit away.
    coarse = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    base = np.asarray(coarse.resize((SIDE, SIDE), Image.Resampling.BICUBIC))
    cells = SIDE * SIDE * 3
    for i in range(n):
        img = base.copy()
        flat = img.reshape(-1)
        flat[i % cells] ^= 0x01 + (i // cells) % 255
        if i >= cells:
            flat[(i * 7 + 1) % cells] ^= 0x40
        yield _png(img)


def write_raw(folder: Path, kind: str, n: int, per_shard: int, seed: int) -> Path:
    """Raw shards under folder/raw (reused when complete)."""
    raw = folder / "raw"
    if (raw / "done").exists():
        return raw
    raw.mkdir(parents=True, exist_ok=True)
    pictures = images(kind, n, seed)
    for shard, first in enumerate(range(0, n, per_shard)):
        rows = []
        with tarfile.open(raw / f"{shard:05d}.tar", "w") as tar:
            for i in range(first, min(n, first + per_shard)):
                data = next(pictures)
                key = f"{shard:05d}{i - first:04d}"
                info = tarfile.TarInfo(f"{key}.png")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                uid = hashlib.sha256(f"{kind}-{seed}-{i}".encode()).hexdigest()[:32]
                rows.append({"key": key, "uid": uid, "url": f"https://img.example.org/{kind}/{i}.png",
                             "caption": f"picture {i}", "queries": [f"q{i % 97}"], "status": "success",
                             "error_message": None, "http_status": 200, "width": SIDE, "height": SIDE,
                             "original_width": SIDE, "original_height": SIDE,
                             "sha256": hashlib.sha256(data).hexdigest(), "phash": image_phash(data),
                             "bytes": len(data)})
        pq.write_table(pa.Table.from_pylist(rows, schema=RAW_ROWS), raw / f"{shard:05d}.parquet")
        (raw / f"{shard:05d}_stats.json").write_text(json.dumps({"shard": f"{shard:05d}", "count": len(rows)}))
    (raw / "done").touch()
    return raw


def run_finalize(code: Path, raw: Path, out: Path, timeout_s: float) -> dict:
    argv = [sys.executable, "-m", "wit_builder.cli", "finalize", "--raw", str(raw), "--out", str(out),
            "--samples-per-shard", "10000", "--runner=FnApiRunner"]
    env = {**os.environ, "PYTHONPATH": str(code)}
    started, before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with (out.parent / f"{out.name}.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=code)
        sampler = Sampler(proc.pid)
        sampler.start()
        try:
            code_ = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            code_ = proc.wait()
        sampler.stop.set()
        sampler.join()
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak = max(sampler.by_role(0).get("launcher", [0]))
    result = {"seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "peak_rss_mb": peak,
              "tree_peak_rss_mb": round(sampler.tree_peak),
              "exit": code_,
              "timed_out": seconds >= timeout_s}
    stats = out / "stats.json"
    if code_ == 0 and stats.exists():
        counts = json.loads(stats.read_text())["counts"]
        result["samples"] = counts["samples"]
        result["near_duplicates"] = counts.get("reason_near_duplicate", 0)
    return result


def exponent(points: list[tuple[int, float]]) -> float | None:
    if len(points) < 2 or points[0][1] <= 0:
        return None
    (n1, y1), (n2, y2) = points[0], points[-1]
    return round(math.log(y2 / y1) / math.log(n2 / n1), 2)


def per_row(points: list[tuple[int, float]]) -> float | None:
    """Growth of a peak in KB per row between the smallest and the largest run (MB figures)."""
    if len(points) < 2:
        return None
    (n1, y1), (n2, y2) = points[0], points[-1]
    return round((y2 - y1) * 1e3 / (n2 - n1), 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distinct", default="10000,40000,160000", help="comma-separated sizes of distinct-image runs")
    parser.add_argument("--cluster", default="5000,20000",
                        help="comma-separated sizes of near-identical clusters (two: the growth exponent of time)")
    parser.add_argument("--rows-per-shard", type=int, default=5000)
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose `wit finalize` runs")
    parser.add_argument("--label", default="this", help="name of --code in the results")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one finalize run may take")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench_finalize_scale")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out = args.out.resolve()  # --code runs in its own folder
    results: list[dict] = [{"settings": {k: str(v) for k, v in vars(args).items()}}]
    series: dict[str, list[tuple[int, dict]]] = {}
    for kind, sizes in (("cluster", args.cluster), ("distinct", args.distinct)):
        for n in (int(x) for x in sizes.split(",") if x):
            folder = args.out / f"{kind}-{n}"
            raw = write_raw(folder, kind, n, args.rows_per_shard, args.seed)
            row = {"kind": kind, "images": n, "code": args.label,
                   **run_finalize(args.code, raw, folder / f"final-{args.label}", args.timeout)}
            results.append(row)
            series.setdefault(kind, []).append((n, row))
            print(json.dumps(row), flush=True)
    for kind, points in series.items():
        done = [(n, r) for n, r in points if r["exit"] == 0]  # a run killed at the timeout has no rate
        growth = {"kind": kind, "code": args.label,
                  "time_exponent": exponent([(n, r["seconds"]) for n, r in done]),
                  "rss_exponent": exponent([(n, r["peak_rss_mb"]) for n, r in done]),
                  "tree_rss_exponent": exponent([(n, r["tree_peak_rss_mb"]) for n, r in done]),
                  "tree_kb_per_row": per_row([(n, r["tree_peak_rss_mb"]) for n, r in done])}
        results.append(growth)
        print(json.dumps(growth), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"results-{args.label}-{int(time.time())}.json"
    (args.out / name).write_text(json.dumps(results, indent=1) + "\n")
    print(f"-> {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
