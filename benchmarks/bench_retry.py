"""Retry benchmark (issue 24): ``wit download --retry-failed`` against downloading everything again.

1. Generates ``BENCH_RETRY_ROWS`` distinct photo-like JPEGs (smooth random colour fields with noise, 256 px,
   ~10-20 kB) and serves them from a Python HTTP server on 127.0.0.1 that answers 503 to the first request for a
   ``BENCH_RETRY_FAILING`` share of them (a transient outage) and 200 afterwards.
2. First run: ``wit download --retries 0`` (the 503s stay failed), timed.
3. ``wit download --retry-failed`` into the same folder, timed: only the failed rows are fetched again.
4. The alternative users have today: the whole download again into a fresh folder (``--overwrite`` would do the
   same), timed.
5. A rerun with nothing to do (every shard complete): the fixed cost of a ``wit download`` process.

Each run is a ``wit download`` process (in-process runner), wall time including start-up; prints the rows
fetched and the seconds of each, and checks that the retried folder equals the fresh one byte for byte.
Results also go to out/bench_retry/results.json.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ROWS = int(os.environ.get("BENCH_RETRY_ROWS", "2000"))
FAILING = float(os.environ.get("BENCH_RETRY_FAILING", "0.1"))
OUT = ROOT / "out" / "bench_retry"


def make_image(i: int) -> bytes:
    rng = np.random.default_rng(i)
    small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(small).resize((256, 256), Image.BICUBIC), dtype=np.int16)
    noisy = np.clip(field + rng.normal(0, 6, field.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, "JPEG", quality=85)
    return buf.getvalue()


class FlakyServer:
    """Serves ``images`` at /i/{n}.jpg; paths in ``failing`` answer 503 on their first request only."""

    def __init__(self, images: list[bytes], failing: set[int]) -> None:
        self.requests = 0
        lock, seen = threading.Lock(), set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                with lock:
                    server.requests += 1
                if self.path == "/robots.txt":
                    self._send(404, b"")
                    return
                n = int(self.path.split("/")[-1].split(".")[0])
                with lock:
                    first = n not in seen
                    seen.add(n)
                if n in failing and first:
                    self._send(503, b"busy")
                else:
                    self._send(200, images[n], "image/jpeg")

            def _send(self, code: int, body: bytes, kind: str = "text/plain") -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"


def download(pairs: Path, out: Path, *extra: str) -> float:
    argv = [sys.executable, "-m", "wit_builder.cli", "download", "--pairs", str(pairs), "--out", str(out),
            "--allow-private-networks", "--retries", "0", "--rows-per-shard", "500", "--threads", "32",
            "--per-host-concurrency", "32", "--image-size", "128", *extra, "--runner=FnApiRunner"]
    started = time.monotonic()
    subprocess.run(argv, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                   stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def main() -> None:
    images = [make_image(i) for i in range(ROWS)]
    failing = set(np.random.default_rng(0).choice(ROWS, int(ROWS * FAILING), replace=False).tolist())
    server = FlakyServer(images, failing)
    work = Path(tempfile.mkdtemp(prefix="bench-retry-"))
    try:
        pairs = work / "pairs-00000.parquet"
        pq.write_table(pa.table({"uid": [f"u{i}" for i in range(ROWS)],
                                 "url": [f"{server.base}/i/{i}.jpg" for i in range(ROWS)],
                                 "caption": [f"image {i}" for i in range(ROWS)],
                                 "queries": [["image"]] * ROWS}), pairs)
        out, fresh = work / "raw", work / "fresh"
        before = server.requests
        first = download(pairs, out)
        first_requests, before = server.requests - before, server.requests
        retried = download(pairs, out, "--retry-failed")
        retry_requests, before = server.requests - before, server.requests
        again = download(pairs, fresh)
        again_requests = server.requests - before
        noop = download(pairs, fresh)
        stats = json.loads((out / "stats.json").read_text())
        same = all((out / p.name).read_bytes() == p.read_bytes() for p in fresh.glob("[0-9]*"))
        results = {"rows": ROWS, "failing_first": len(failing), "first_s": round(first, 1),
                   "first_requests": first_requests, "retry_s": round(retried, 1), "retry_requests": retry_requests,
                   "full_again_s": round(again, 1), "full_again_requests": again_requests,
                   "nothing_to_do_s": round(noop, 1),
                   "successes_after_retry": stats["counts"]["status_success"], "retried_equals_fresh": same}
    finally:
        server.httpd.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"--retry-failed: {results['retry_s']} s for {results['retry_requests']} requests; downloading all "
          f"again: {results['full_again_s']} s for {results['full_again_requests']} requests "
          f"({results['full_again_s'] / max(results['retry_s'], 1e-9):.1f}x); a rerun with nothing to do: "
          f"{results['nothing_to_do_s']} s")


if __name__ == "__main__":
    main()
