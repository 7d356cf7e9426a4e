"""Peak memory of build-pairs against input size: the in-process FnApiRunner vs Beam's Spark runner on a
standalone Spark cluster whose executors and Python SDK workers are limited to a small size.

    .venv/bin/python benchmarks/bench_scale.py [--texts 20000,60000,120000] [--queries 20000]
        [--executor-memory 512m] [--worker-memory-mb 1200] [--workers external|loopback] [--runners fnapi,spark]
    (make bench-scale; needs Java 17, Maven and the [runners] extra: make runners fetches the job server)

For each size the same generated pool (alt-text-like captions from bench_match's Zipfian vocabulary, one
url each, split into parquet files of ``--texts-per-file`` rows as a crawl comes in many files) and the same
queries run through ``wit build-pairs`` on each runner. On Spark the Python DoFns run in SDK worker processes
of a worker pool (``--environment_type=EXTERNAL``, runners/worker_pool.py, started as the tests start it), each
capped at ``--worker-memory-mb`` of address space (RLIMIT_AS), or with ``--workers loopback`` in the launcher.
A sampler reads /proc every 0.2 s and keeps, per process, the kernel's peak resident set size (VmHWM) and
peak address space (VmPeak), grouped by role: ``launcher`` (the ``wit`` process: on FnApiRunner it runs
everything), ``job-server`` (the Spark driver), ``executor`` (each Spark executor JVM), ``spark-daemon``
(master and workers), ``worker-pool`` and ``sdk-worker`` (each Python SDK worker process). Outputs of the runners
are compared row for row (pairs and query counts); a difference exits 1. Results go to stdout and
out/bench_scale/results.json. ``peak_tree_rss_mb`` is the largest sum of the resident sets of every process the
run started (launcher, SDK workers, JVMs; for an in-process run only the launcher and its children, not the idle
cluster beside it) seen at one sample; with two or more sizes the growth exponent of the
in-process peak, log(m2/m1)/log(n2/n1) from the smallest to the largest size, is printed. ``--code DIR`` runs
another checkout's ``wit`` on the same inputs (a side-by-side with the main branch); ``--stages`` adds
``finalize`` (benchmarks/bench_finalize_scale.py) and ``sketch`` (build-queries' sketch memory at two widths).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_match import make_queries, make_texts, vocabulary, zipf_weights  # noqa: E402

from schemas.queries import AS_WRITTEN, QUERIES, QUERIES_PARQUET  # noqa: E402
from tests.portability_fixtures import engine_job_server, sdk_worker_pool, spark_standalone  # noqa: E402

# Every process this benchmark starts (and the executors its Spark workers start) inherits this marker, so the
# sampler ignores other Spark or Beam processes on a shared machine.
MARKER = f"WIT_BENCH_SCALE={os.getpid()}".encode()
os.environ["WIT_BENCH_SCALE"] = str(os.getpid())


def make_inputs(folder: Path, texts: int, queries: int, seed: int, per_file: int) -> tuple[Path, Path]:
    """queries/queries.parquet and pool/part-*.parquet (url, caption) for one size; reused when present."""
    qdir, pool = folder / "queries", folder / "pool"
    if (qdir / QUERIES_PARQUET).exists() and (pool / "done").exists():
        return qdir, pool
    rng = random.Random(seed)
    words = vocabulary(max(queries, 50_000), rng)
    cum = zipf_weights(len(words))
    qs = make_queries(words, cum, queries, rng)
    captions = make_texts(words, cum, texts, rng)
    qdir.mkdir(parents=True, exist_ok=True)
    pool.mkdir(parents=True, exist_ok=True)
    n = len(qs)
    pq.write_table(pa.table({"query": qs, "source": ["unigram"] * n, "count": [1] * n, "score": [1.0] * n,
                             "lang": ["en"] * n, AS_WRITTEN: qs}, schema=QUERIES), qdir / QUERIES_PARQUET)
    urls = [f"http://images.example.org/{i // 1000}/{i}.jpg" for i in range(texts)]
    for part, start in enumerate(range(0, texts, per_file)):
        pq.write_table(pa.table({"url": urls[start:start + per_file], "caption": captions[start:start + per_file]}),
                       pool / f"part-{part:05d}.parquet")
    (pool / "done").touch()
    return qdir, pool


def role(cmdline: str, launcher: int, pid: int) -> str | None:
    if pid == launcher:
        return "launcher"
    if "CoarseGrainedExecutorBackend" in cmdline:
        return "executor"
    if "job-server" in cmdline or "JobServerDriver" in cmdline:
        return "job-server"
    if "org.apache.spark.deploy" in cmdline:
        return "spark-daemon"
    if "worker_pool" in cmdline:
        return "worker-pool"
    if "SdkHarness(" in cmdline:
        return "sdk-worker"
    return None


def _status_kb(pid: int, *fields: str) -> list[int]:
    lines = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return [int(lines[f].split()[0]) for f in fields]


class Sampler(threading.Thread):
    """The kernel's peak RSS (VmHWM) and peak address space (VmPeak), in MB, of every process of interest."""

    def __init__(self, launcher: int, launcher_tree_only: bool = False) -> None:
        super().__init__(daemon=True)
        self.launcher, self.stop = launcher, threading.Event()
        self.peaks: dict[tuple[str, int], tuple[float, float]] = {}
        self.tree_peak = 0.0  # MB: the largest sum of VmRSS over the marked processes at one sample
        # an in-process run beside an idle Spark cluster: only the launcher and its children count
        self.launcher_tree_only = launcher_tree_only

    def _in_launcher_tree(self, pid: int) -> bool:
        while pid > 1:
            if pid == self.launcher:
                return True
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])  # the parent's pid
        return False

    def sample(self) -> None:
        tree = 0.0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            with contextlib.suppress(OSError, KeyError, ValueError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                kind = role(cmd, self.launcher, pid)
                marked = MARKER in Path(f"/proc/{pid}/environ").read_bytes() and pid != os.getpid()
                if marked and self.launcher_tree_only:
                    marked = self._in_launcher_tree(pid)
                if marked:
                    tree += _status_kb(pid, "VmRSS")[0] / 1e3
                if kind and marked:
                    hwm, peak = _status_kb(pid, "VmHWM", "VmPeak")
                    self.peaks[(kind, pid)] = (hwm / 1e3, peak / 1e3)
        self.tree_peak = max(self.tree_peak, tree)

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            time.sleep(0.2)

    def by_role(self, field: int = 0) -> dict[str, list[float]]:
        """Per role, the peaks (0: RSS, 1: address space) of its processes, in MB."""
        out: dict[str, list[float]] = {}
        for (kind, _), values in sorted(self.peaks.items()):
            out.setdefault(kind, []).append(round(values[field]))
        return out


def run_build_pairs(qdir: Path, pool: Path, out: Path, beam: list[str], rows_per_file: int,
                    timeout_s: float, code: Path = ROOT) -> tuple[float, dict[str, list[float]], dict[str, list[float]],
                                                               float]:
    argv = [sys.executable, "-m", "wit_builder.cli", "build-pairs", "--queries", str(qdir),
            "--pool", str(pool / "*.parquet"), "--out", str(out), "--per-query-cap", "50",
            "--rows-per-file", str(rows_per_file), *beam]
    env = {**os.environ, "PYTHONPATH": str(code)}
    started, before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with (out.parent / f"{out.name}.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=code)
        sampler = Sampler(proc.pid, launcher_tree_only=beam == ["--runner=FnApiRunner"])
        sampler.start()
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            print(f"build-pairs on {beam[0]} did not finish in {timeout_s} s", flush=True)
        sampler.stop.set()
        sampler.join()
        sampler.sample()  # the long-lived processes' last peaks
    if code != 0:
        raise SystemExit(f"build-pairs on {beam[0]} exited {code}; see {out.parent / (out.name + '.log')}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the run's own and its waited-for children's CPU
    CPU[str(out)] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1)
    return time.monotonic() - started, sampler.by_role(0), sampler.by_role(1), round(sampler.tree_peak)


CPU: dict[str, float] = {}  # out folder -> CPU seconds of the build-pairs run that wrote it


def rows(out: Path) -> tuple[list, list]:
    def read(pattern: str, cols: list[str]) -> list:
        return sorted((tuple(tuple(v) if isinstance(v, list) else v for v in r.values())
                       for p in sorted(out.glob(pattern)) for r in pq.read_table(p, columns=cols).to_pylist()),
                      key=repr)
    return read("pairs-*.parquet", ["uid", "url", "caption", "queries"]), read(
        "query_counts.parquet", ["query", "matched", "kept"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", default=os.environ.get("BENCH_SCALE_TEXTS", "20000,60000,120000"),
                        help="comma-separated pool sizes (captions)")
    parser.add_argument("--queries", type=int, default=int(os.environ.get("BENCH_SCALE_QUERIES", 20_000)))
    parser.add_argument("--texts-per-file", type=int, default=10_000, help="captions per pool file")
    parser.add_argument("--executor-memory", default="512m", help="heap of each Spark executor (spark.executor.memory)")
    parser.add_argument("--workers", choices=("external", "loopback"), default="external",
                        help="where Spark's Python DoFns run: SDK worker processes of a worker pool, or the launcher")
    parser.add_argument("--worker-memory-mb", type=int, default=1200,
                        help="address-space cap (RLIMIT_AS) of the worker pool and each SDK worker, in MiB "
                             "(an idle worker maps ~0.6 GB; the largest at 300k captions ~1 GB)")
    parser.add_argument("--runners", default="fnapi,spark")
    parser.add_argument("--rows-per-file", type=int, default=5000,
                        help="build-pairs --rows-per-file: a pairs file's rows are sorted in one worker's memory, so "
                             "this bounds the Python side on any runner")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one build-pairs run may take")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench_scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose `wit build-pairs` runs")
    parser.add_argument("--label", default="this", help="name of --code in the results")
    parser.add_argument("--stages", default="pairs", help="comma-separated: pairs, finalize, sketch")
    args = parser.parse_args()
    stages = args.stages.split(",")
    if "pairs" not in stages:
        return run_others(stages, args)
    runners = args.runners.split(",")
    results: list[dict] = [{"settings": {k: str(v) for k, v in vars(args).items()}}]
    with contextlib.ExitStack() as stack:
        spark_opts: list[str] = []
        if "spark" in runners:
            work = args.out / "spark"
            work.mkdir(parents=True, exist_ok=True)
            master = stack.enter_context(spark_standalone(work, workers=2, worker_memory=args.executor_memory))
            pool = (stack.enter_context(sdk_worker_pool(work, args.worker_memory_mb))
                    if args.workers == "external" else None)
            spark_opts = stack.enter_context(engine_job_server(
                "spark", work, master, heap="768m",
                java_options=[f"-Dspark.executor.memory={args.executor_memory}", "-Dspark.executor.cores=1",
                              f"-Dspark.local.dir={work / 'local'}"], worker_pool=pool))
        for n in (int(x) for x in args.texts.split(",")):
            folder = args.out / f"texts-{n}"
            qdir, pool_dir = make_inputs(folder, n, args.queries, args.seed, args.texts_per_file)
            outputs = {}
            for runner in runners:
                beam = ["--runner=FnApiRunner"] if runner == "fnapi" else spark_opts
                out = folder / f"pairs-{runner}"
                out = folder / f"pairs-{runner}-{args.label}"
                seconds, peaks, address, tree = run_build_pairs(qdir, pool_dir, out, beam, args.rows_per_file,
                                                                args.timeout, args.code)
                outputs[runner] = rows(out)
                if runner == "fnapi":  # the cluster idles meanwhile: only the in-process run counts
                    peaks, address = {"launcher": peaks.get("launcher", [])}, {"launcher": address.get("launcher", [])}
                row = {"texts": n, "runner": runner, "code": args.label, "seconds": round(seconds, 1),
                       "cpu_seconds": CPU[str(out)], "peak_rss_mb": peaks, "peak_tree_rss_mb": tree,
                       "peak_address_space_mb": address, "pairs": len(outputs[runner][0])}
                results.append(row)
                print(json.dumps(row), flush=True)
            same = all(o == outputs[runners[0]] for o in outputs.values())
            results.append({"texts": n, "identical_outputs": same})
            print(f"texts={n}: outputs identical across {runners}: {same}", flush=True)
            if not same:
                return 1
    fnapi = [(r["texts"], r["peak_tree_rss_mb"]) for r in results[1:] if r.get("runner") == "fnapi"]
    if len(fnapi) >= 2:
        (n1, m1), (n2, m2) = min(fnapi), max(fnapi)
        growth = {"growth_exponent_peak_tree_rss": round(math.log(m2 / m1) / math.log(n2 / n1), 3),
                  "from": n1, "to": n2, "code": args.label}
        results.append(growth)
        print(json.dumps(growth), flush=True)
    name = f"results-{args.label}.json"
    (args.out / name).write_text(json.dumps(results, indent=1) + "\n")
    print(f"-> {args.out / name}")
    return run_others(stages, args)


def run_others(stages: list[str], args: argparse.Namespace) -> int:
    """The finalize and sketch parts of bench-scale, each in its own process (their own result files)."""
    code = 0
    if "finalize" in stages:
        code |= subprocess.call([sys.executable, str(ROOT / "benchmarks" / "bench_finalize_scale.py"),
                                 "--out", str(args.out.parent / "bench_finalize_scale")])
    if "sketch" in stages:
        code |= subprocess.call([sys.executable, str(ROOT / "benchmarks" / "bench_queries.py"), "--sketch-memory"])
    return code


if __name__ == "__main__":
    sys.exit(main())
