"""Gallery benchmark (issue 24): the size and the time of ``OUT/gallery/`` per 10k samples.

Writes ``BENCH_GALLERY_SAMPLES`` raw samples (default 10,000; distinct photo-like 256 px JPEGs, smooth random
colour fields with noise) in raw shards of 1,000 with queries drawn from ``BENCH_GALLERY_QUERIES`` (default 500)
by a Zipf law (a few head queries, a long tail), then runs ``wit finalize`` twice on them: with the default
gallery and with ``--gallery-samples 0``, and times ``gallery.write_gallery`` alone on the finished folder
(in this process). Prints the gallery's files and bytes (pages, thumbnails) and the time it cost. Results also
go to out/bench_gallery/results.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_retry import make_image  # noqa: E402
from wit_builder.download import raw_shards  # noqa: E402
from wit_builder.download.raw_shards import RawSample  # noqa: E402
from wit_builder.finalize import gallery  # noqa: E402
from wit_builder.finalize.options import DEFAULT_GALLERY_SAMPLES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = int(os.environ.get("BENCH_GALLERY_SAMPLES", "10000"))
QUERIES = int(os.environ.get("BENCH_GALLERY_QUERIES", "500"))
PER_RAW_SHARD = 1000
OUT = ROOT / "out" / "bench_gallery"


def write_raw(folder: Path) -> None:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    for shard in range(0, SAMPLES, PER_RAW_SHARD):
        samples = []
        for i in range(shard, min(SAMPLES, shard + PER_RAW_SHARD)):
            queries = sorted({f"query {int(q) % QUERIES}" for q in rng.zipf(1.3, size=2)})
            row = {"key": f"{i:09d}", "uid": f"uid-{i:07d}", "url": f"http://example.com/{i}.jpg",
                   "caption": f"a photo for {' and '.join(queries)} number {i}", "queries": queries,
                   "status": "success", "width": 256, "height": 256, "original_width": 256, "original_height": 256}
            samples.append(RawSample(row, make_image(10_000_000 + i), "jpg"))
        name = raw_shards.shard_name(shard // PER_RAW_SHARD)
        with open(folder / f"{name}.tar", "wb") as f:
            raw_shards.write_tar(f, samples)
        import pyarrow.parquet as pq

        pq.write_table(raw_shards.rows_table(samples), folder / f"{name}.parquet")


def finalize(raw: Path, out: Path, *extra: str) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "wit_builder.cli", "finalize", "--raw", str(raw), "--out", str(out),
                    *extra, "--runner=FnApiRunner"], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-gallery-"))
    try:
        write_raw(work / "raw")
        with_gallery = finalize(work / "raw", work / "with")
        without = finalize(work / "raw", work / "without", "--gallery-samples", "0")
        raw_tars = {p.stem: str(p) for p in (work / "raw").glob("*.tar")}
        started = time.monotonic()
        gallery.write_gallery(str(work / "with"), raw_tars, DEFAULT_GALLERY_SAMPLES)
        alone = time.monotonic() - started
        files = [p for p in (work / "with" / "gallery").rglob("*") if p.is_file()]
        thumbs = [p for p in files if p.parent.name == "t"]
        samples = json.loads((work / "with" / "stats.json").read_text())["counts"]["samples"]
        results = {"samples": samples, "queries": QUERIES, "gallery_files": len(files),
                   "gallery_bytes": sum(p.stat().st_size for p in files), "thumbnails": len(thumbs),
                   "thumbnail_bytes": sum(p.stat().st_size for p in thumbs),
                   "finalize_with_gallery_s": round(with_gallery, 1), "finalize_without_s": round(without, 1),
                   "write_gallery_alone_s": round(alone, 1)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
