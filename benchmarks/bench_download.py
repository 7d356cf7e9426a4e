"""Download benchmark: `wit download` (native engine) vs img2dataset 1.47, side by side, same urls and settings.

1. Generates photo-like JPEGs (crops, rescales, flips and colour shifts of scikit-image / scikit-learn photos,
   mild sensor noise, varied JPEG quality; 50 kB to 2 MB) once, cached under out/bench_download/images.
2. Serves them with Debian's nginx on loopback (a generated config, run as the current user, pid and logs in
   a temp dir), spread over several loopback addresses (127.0.0.1..N) so that per-host limits act as they
   would on a real crawl.
3. Throughput run: both engines download the same url list at 256 px (center_crop), jpg q95, the same
   threads, processes and shard size; prints images/s and CPU seconds per image (getrusage of the child
   processes), and the ratio native / img2dataset.
4. Single-host run: one nginx server that answers 429 (Retry-After: 1) above a request rate (limit_req,
   burst of half a second; nginx's limit_conn cannot model it on loopback, where static files are served in
   microseconds and concurrency never builds up); both engines with the same retries and threads, native
   with its default per-host settings (no rate cap: it learns from the 429s); prints each success rate.

Sizes are overridable by environment variables (see ``Settings``), e.g. BENCH_DOWNLOAD_IMAGES=300 for a
quick run. Results also go to out/bench_download/results.json.
"""

from __future__ import annotations

import io
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "out" / "bench_download"
BIN = Path(sys.executable).parent
NGINX = "/usr/sbin/nginx"


def _env(name: str, default: int) -> int:
    return int(os.environ.get(f"BENCH_DOWNLOAD_{name}", default))


@dataclass(frozen=True)
class Settings:
    images: int = field(default_factory=lambda: _env("IMAGES", 2000))
    hosts: int = field(default_factory=lambda: _env("HOSTS", 4))
    processes: int = field(default_factory=lambda: _env("PROCESSES", os.cpu_count() or 2))
    threads: int = field(default_factory=lambda: _env("THREADS", 32))
    rows_per_shard: int = field(default_factory=lambda: _env("ROWS_PER_SHARD", 250))
    limit_rows: int = field(default_factory=lambda: _env("LIMIT_ROWS", 600))    # rows in the 429 run
    rate_limit: int = field(default_factory=lambda: _env("RATE_LIMIT", 20))     # 429 above this many requests/s
    retries: int = field(default_factory=lambda: _env("RETRIES", 2))
    image_size: int = 256
    resize_mode: str = "center_crop"
    encode_quality: int = 95


# ---- 1. photo-like images ----

def _sources() -> list[np.ndarray]:
    from skimage import data
    from sklearn.datasets import load_sample_images

    names = ["astronaut", "coffee", "chelsea", "rocket", "cat", "hubble_deep_field", "immunohistochemistry",
             "retina", "camera", "brick", "grass", "gravel", "moon", "coins", "clock"]
    photos = [getattr(data, n)() for n in names] + list(load_sample_images().images)
    return [np.stack([p] * 3, axis=-1) if p.ndim == 2 else p[..., :3] for p in photos]


def _photo(rng: random.Random, sources: list[np.ndarray]) -> bytes:
    src = Image.fromarray(rng.choice(sources))
    w, h = src.size
    cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    img = src.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    long_side = int(np.exp(rng.uniform(np.log(420), np.log(2600))))  # log-uniform: many small, some big
    scale = long_side / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) * np.array([rng.uniform(0.85, 1.15) for _ in range(3)], np.float32)
    nprng = np.random.default_rng(rng.randrange(1 << 30))
    arr += nprng.normal(0, rng.uniform(1.0, 4.0), arr.shape).astype(np.float32)  # sensor noise, as cameras have
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=rng.randint(72, 96))
    return buf.getvalue()


def generate_images(count: int) -> Path:
    folder = CACHE / "images"
    manifest = CACHE / "images.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("count") == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng, sources = random.Random(1234), _sources()
    sizes = []
    for i in range(count):
        data = _photo(rng, sources)
        while not 50_000 <= len(data) <= 2_000_000:
            data = _photo(rng, sources)
        (folder / f"{i:05d}.jpg").write_bytes(data)
        sizes.append(len(data))
        if i % 250 == 0:
            print(f"  generated {i}/{count} images", flush=True)
    manifest.write_text(json.dumps({"count": count, "sizes": sizes}))
    return folder


# ---- 2. nginx ----

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """nginx in the foreground with a generated config: a static server on several loopback addresses, and a
    single-host server that answers 429 (Retry-After: 1) above ``rate`` requests per second (burst rate/2)."""

    def __init__(self, root: Path, hosts: int, rate: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="wit-bench-nginx-"))
        self.port, self.limited_port = _free_port(), _free_port()
        self.hosts = [f"127.0.0.{i + 1}" for i in range(hosts)]
        listens = "\n".join(f"    listen {h}:{self.port};" for h in self.hosts)
        user = "user root;" if os.geteuid() == 0 else ""
        (self.dir / "nginx.conf").write_text(f"""
{user}
worker_processes 1;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  types {{ image/jpeg jpg; }}
  client_body_temp_path {self.dir}/body;
  proxy_temp_path {self.dir}/proxy;
  fastcgi_temp_path {self.dir}/fastcgi;
  uwsgi_temp_path {self.dir}/uwsgi;
  scgi_temp_path {self.dir}/scgi;
  limit_req_zone $server_port zone=perhost:1m rate={rate}r/s;
  server {{
{listens}
    root {root};
  }}
  server {{
    listen 127.0.0.1:{self.limited_port};
    root {root};
    limit_req zone=perhost burst={rate // 2} nodelay;
    limit_req_status 429;
    error_page 429 @busy;
    location @busy {{ add_header Retry-After 1 always; return 429; }}
  }}
}}
""")
        self.proc = subprocess.Popen([NGINX, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(100):
            try:
                socket.create_connection((self.hosts[0], self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not start: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGQUIT)
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- 3. the two engines ----

def write_urls(path: Path, urls: list[str]) -> Path:
    captions = [f"photo number {i}" for i in range(len(urls))]
    pq.write_table(pa.table({"url": urls, "caption": captions}), path)
    return path


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user+system of the child and everything it waited for), output tail."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, cpu, (proc.stdout + proc.stderr)[-2000:]


def run_native(s: Settings, urls: Path, out: Path, env: dict[str, str], extra: list[str] | None = None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [str(BIN / "wit"), "download", "--pairs", str(urls), "--out", str(out), "--engine", "native",
               "--image-size", str(s.image_size), "--resize-mode", s.resize_mode, "--encode-format", "jpg",
               "--encode-quality", str(s.encode_quality), "--threads", str(s.threads),
               "--rows-per-shard", str(s.rows_per_shard), "--retries", str(s.retries), "--allow-private-networks",
               *(extra or []), "--runner=FnApiRunner"]
    if s.processes > 1:
        command += ["--direct_running_mode=multi_processing", f"--direct_num_workers={s.processes}"]
    wall, cpu, _ = timed(command, env)
    stats = json.loads((out / "stats.json").read_text())
    statuses = stats["details"]["statuses"]
    return {"wall_s": wall, "cpu_s": cpu, "rows": stats["counts"]["rows"], "successes": statuses["success"],
            "statuses": statuses}


def run_img2dataset(s: Settings, urls: Path, out: Path, env: dict[str, str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [str(BIN / "img2dataset"), "--url_list", str(urls), "--input_format", "parquet",
               "--url_col", "url", "--caption_col", "caption", "--output_format", "webdataset",
               "--output_folder", str(out), "--processes_count", str(s.processes), "--thread_count", str(s.threads),
               "--image_size", str(s.image_size), "--resize_mode", s.resize_mode, "--encode_format", "jpg",
               "--encode_quality", str(s.encode_quality), "--number_sample_per_shard", str(s.rows_per_shard),
               "--retries", str(s.retries), "--extract_exif", "False", "--enable_wandb", "False"]
    wall, cpu, _ = timed(command, env)
    statuses: dict[str, int] = {}
    rows = 0
    for stats_file in out.glob("*_stats.json"):
        stats = json.loads(stats_file.read_text())
        rows += stats["count"]
        for key in ("successes", "failed_to_download", "failed_to_resize"):
            statuses[key] = statuses.get(key, 0) + stats[key]
    return {"wall_s": wall, "cpu_s": cpu, "rows": rows, "successes": statuses.get("successes", 0),
            "statuses": statuses}


def summary(name: str, r: dict) -> str:
    ok = max(r["successes"], 1)
    return (f"  {name:<12} {r['rows']:>6} rows  {r['successes']:>6} ok  {r['wall_s']:7.1f} s  "
            f"{r['successes'] / r['wall_s']:8.1f} images/s  {r['cpu_s'] / ok * 1000:7.2f} CPU ms/image  "
            f"success {100 * r['successes'] / max(r['rows'], 1):5.1f}%")


def main() -> int:
    s = Settings()
    print(f"bench-download: {asdict(s)}", flush=True)
    folder = generate_images(s.images)
    sizes = json.loads((CACHE / "images.json").read_text())["sizes"]
    print(f"images: {len(sizes)} JPEGs, {min(sizes) / 1e3:.0f} kB to {max(sizes) / 1e6:.2f} MB, "
          f"median {sorted(sizes)[len(sizes) // 2] / 1e3:.0f} kB, total {sum(sizes) / 1e6:.0f} MB", flush=True)
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled"}
    work = CACHE / "runs"
    work.mkdir(parents=True, exist_ok=True)
    nginx = Nginx(folder, s.hosts, s.rate_limit)
    results: dict = {"settings": asdict(s), "image_bytes": {"min": min(sizes), "max": max(sizes),
                                                             "total": sum(sizes)}}
    try:
        names = [f"{i:05d}.jpg" for i in range(s.images)]
        urls = write_urls(work / "urls.parquet",
                          [f"http://{nginx.hosts[i % len(nginx.hosts)]}:{nginx.port}/{n}" for i, n in enumerate(names)])
        print(f"throughput: {s.images} urls over {s.hosts} loopback hosts, {s.processes} processes x {s.threads} "
              f"threads, {s.image_size}px {s.resize_mode} jpg q{s.encode_quality}", flush=True)
        # img2dataset first, then native: page cache warm for both after the generation step.
        peer = run_img2dataset(s, urls, work / "img2dataset", env)
        print(summary("img2dataset", peer), flush=True)
        native = run_native(s, urls, work / "native", env,
                            ["--per-host-concurrency", str(max(16, s.threads))])
        print(summary("native", native), flush=True)
        speed = (native["successes"] / native["wall_s"]) / max(peer["successes"] / peer["wall_s"], 1e-9)
        cpu = (peer["cpu_s"] / max(peer["successes"], 1)) / max(native["cpu_s"] / max(native["successes"], 1), 1e-9)
        print(f"  ratio native/img2dataset: {speed:.2f}x images/s, {cpu:.2f}x less CPU per image "
              f"(target >= 1.5x images/s)", flush=True)
        results["throughput"] = {"img2dataset": peer, "native": native, "speed_ratio": speed, "cpu_ratio": cpu}

        limited = names[: s.limit_rows]
        limited_urls = write_urls(work / "urls_limited.parquet",
                                  [f"http://127.0.0.1:{nginx.limited_port}/{n}" for n in limited])
        print(f"single host answering 429 above {s.rate_limit} requests/s: {len(limited)} urls, "
              f"retries={s.retries} for both", flush=True)
        peer_429 = run_img2dataset(s, limited_urls, work / "img2dataset_429", env)
        print(summary("img2dataset", peer_429), flush=True)
        native_429 = run_native(s, limited_urls, work / "native_429", env)
        print(summary("native", native_429), flush=True)
        results["single_host_429"] = {"img2dataset": peer_429, "native": native_429}
    finally:
        nginx.stop()
    (CACHE / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results: {CACHE / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
