"""Helpers for tests/test_portability.py: an object-store filesystem, the portable job service, tiny stage inputs.

``membucket://bucket/key`` behaves like GCS for Beam's FileSystems: flat keys, no directories (``mkdirs`` is
a no-op, ``exists`` is true only for objects), rename is copy + delete, and the bytes live in this process's
memory — a stage that bypasses FileSystems (``open()``, ``os.path``, ``pathlib``) fails on it.
"""

from __future__ import annotations

import bz2
import contextlib
import fcntl
import io
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from apache_beam.io.filesystem import (
    BeamIOError,
    CompressedFile,
    CompressionTypes,
    FileMetadata,
    FileSystem,
)
from apache_beam.runners.portability.stager import Stager

SCHEME = "membucket"


class _Upload(io.BytesIO):
    """A write handle that publishes the object only on close, as an object store's upload does."""

    def __init__(self, store: dict[str, tuple[bytes, float]], path: str) -> None:
        super().__init__()
        self._store, self._path = store, path

    def close(self) -> None:
        if not self.closed:
            self._store[self._path] = (self.getvalue(), time.time())
        super().close()


class MemBucketFileSystem(FileSystem):
    """An in-memory object store under ``membucket://`` (Beam discovers FileSystem subclasses by scheme)."""

    objects: dict[str, tuple[bytes, float]] = {}

    @classmethod
    def scheme(cls) -> str:
        return SCHEME

    def join(self, basepath: str, *paths: str) -> str:
        return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

    def split(self, path: str) -> tuple[str, str]:
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path: str) -> None:
        pass  # an object store has no directories

    def has_dirs(self) -> bool:
        return False

    def _list(self, dir_or_prefix: str) -> Iterator[FileMetadata]:
        for key, (data, mtime) in sorted(self.objects.items()):
            if key.startswith(dir_or_prefix):
                yield FileMetadata(key, len(data), mtime)

    @staticmethod
    def _compression(path: str, compression_type: str) -> str:
        if compression_type == CompressionTypes.AUTO:
            return CompressionTypes.detect_compression_type(path)
        return compression_type

    def create(self, path: str, mime_type: str = "application/octet-stream",
               compression_type: str = CompressionTypes.AUTO):
        raw = _Upload(self.objects, path)
        compression = self._compression(path, compression_type)
        return raw if compression == CompressionTypes.UNCOMPRESSED else CompressedFile(raw, compression)

    def open(self, path: str, mime_type: str = "application/octet-stream",
             compression_type: str = CompressionTypes.AUTO):
        if path not in self.objects:
            raise BeamIOError("Open operation failed", {path: FileNotFoundError(path)})
        raw = io.BytesIO(self.objects[path][0])
        compression = self._compression(path, compression_type)
        return raw if compression == CompressionTypes.UNCOMPRESSED else CompressedFile(raw, compression)

    def copy(self, source_file_names: list[str], destination_file_names: list[str]) -> None:
        for src, dst in zip(source_file_names, destination_file_names, strict=True):
            if src not in self.objects:
                raise BeamIOError("Copy operation failed", {(src, dst): FileNotFoundError(src)})
            self.objects[dst] = (self.objects[src][0], time.time())

    def rename(self, source_file_names: list[str], destination_file_names: list[str]) -> None:
        self.copy(source_file_names, destination_file_names)
        self.delete(source_file_names)

    def exists(self, path: str) -> bool:
        return path in self.objects

    def size(self, path: str) -> int:
        return len(self.objects[path][0])

    def last_updated(self, path: str) -> float:
        return self.objects[path][1]

    def checksum(self, path: str) -> str:
        return str(len(self.objects[path][0]))

    def metadata(self, path: str) -> FileMetadata:
        data, mtime = self.objects[path]
        return FileMetadata(path, len(data), mtime)

    def delete(self, paths: list[str]) -> None:
        missing = {}
        for path in paths:
            # As on GCS, a path ending in "/" deletes everything under that prefix.
            keys = [k for k in self.objects if k.startswith(path)] if path.endswith("/") else [path]
            for key in keys:
                if self.objects.pop(key, None) is None:
                    missing[key] = FileNotFoundError(key)
        if missing:
            raise BeamIOError("Delete operation failed", missing)

    def report_lineage(self, path, lineage) -> None:
        pass


def upload_tree(local: Path, remote: str) -> None:
    """Copy a local folder's files into the bucket under ``remote``."""
    for path in sorted(local.rglob("*")):
        if path.is_file():
            MemBucketFileSystem.objects[f"{remote.rstrip('/')}/{path.relative_to(local).as_posix()}"] = (
                path.read_bytes(), path.stat().st_mtime)


# ---- tiny real inputs ----

def truncated_dump(sample: Path, out: Path, pages: int) -> Path:
    """The first ``pages`` pages of a real MediaWiki dump, closed properly, as a new .bz2 file."""
    text = bz2.decompress(sample.read_bytes()).decode("utf-8")
    end = 0
    for _ in range(pages):
        end = text.index("</page>", end) + len("</page>")
    out.write_bytes(bz2.compress((text[:end] + "\n</mediawiki>\n").encode("utf-8")))
    return out


# ---- --setup_file: Beam builds the project's sdist in the source tree ----

SDIST_LOCK = Path(tempfile.gettempdir()) / "wit-builder-sdist.lock"


def serialized_sdist_builds() -> Callable:
    """Beam's sdist builder wrapped in a file lock: pytest-xdist workers building at once in the same source tree
    would race on its egg-info folder."""
    original = Stager._build_setup_package

    def build(*args, **kwargs):
        with SDIST_LOCK.open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return original(*args, **kwargs)

    return build


# ---- the portable job service and an EXTERNAL worker pool (the path Flink and Spark job servers take) ----

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{proc.args} did not listen on port {port} within {timeout}s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def portable_job_service(workdir: Path) -> Iterator[list[str]]:
    """Start ``local_job_service_main`` and ``worker_pool_main``; yield the PortableRunner options to use them.

    The worker pool starts SDK workers with the ``python`` first on PATH, so this interpreter's folder goes
    first. Both run in their own process group, which is ended (by its id) when the block exits.
    """
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    job_port, worker_port = free_port(), free_port()
    commands = {
        "job_service": [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
                        "--port", str(job_port), "--staging_dir", str(workdir / "staging")],
        "worker_pool": [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                        f"--service_port={worker_port}"],
    }
    procs: list[subprocess.Popen] = []
    try:
        for (name, argv), port in zip(commands.items(), (job_port, worker_port), strict=True):
            log = workdir / f"{name}.log"
            with log.open("wb") as f:
                procs.append(subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env,
                                              start_new_session=True))
            _wait_for_port(port, procs[-1], log)
        yield [
            "--runner=PortableRunner", f"--job_endpoint=localhost:{job_port}", "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{worker_port}",
            f"--setup_file={Path(__file__).resolve().parents[1] / 'pyproject.toml'}",
        ]
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()


# ---- real engines: Beam's Spark and Flink job servers (runners/fetch.py), a standalone Spark cluster ----

REPO = Path(__file__).resolve().parents[1]
RUNNERS_BUILD = REPO / "runners" / "build"


def job_server_jar(runner: str) -> Path:
    """The launcher jar of Beam's ``runner`` job server, fetched by ``runners/fetch.py`` when missing.

    Skips the test when Java or Maven is absent (.ci/run has both and fetches the jars first)."""
    import pytest

    jar = RUNNERS_BUILD / f"beam-{runner}-job-server.jar"
    if not jar.exists():
        if not (shutil.which("java") and shutil.which("mvn")):
            pytest.skip("Java and Maven are needed for the Spark and Flink job servers")
        subprocess.run([sys.executable, str(REPO / "runners" / "fetch.py"), "--runner", runner], check=True)
    return jar


def _start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with log.open("wb") as f:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env or os.environ.copy(),
                                start_new_session=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait()


def spark_env(workdir: Path) -> dict[str, str]:
    """Environment of the Spark daemons and job server: pyspark's Spark, on the loopback interface."""
    sys.path.insert(0, str(RUNNERS_BUILD.parent))
    from fetch import spark_home

    home = spark_home()
    # SPARK_SCALA_VERSION: the launcher of executors looks for a source build without it ("Cannot find any build
    # directories"); the pip-installed Spark is a binary one (Scala 2.12).
    return {**os.environ, "SPARK_HOME": str(home), "SPARK_SCALA_VERSION": "2.12", "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOCAL_DIRS": str(workdir)}


@contextlib.contextmanager
def spark_standalone(workdir: Path, workers: int = 2, worker_memory: str = "1g",
                     daemon_heap: str = "256m") -> Iterator[str]:
    """A standalone Spark master and ``workers`` worker processes (one core each) from pyspark's Spark.

    Yields the master URL ``spark://127.0.0.1:PORT``; every process is ended by its group id on exit."""
    env = spark_env(workdir)
    classpath = f"{env['SPARK_HOME']}/jars/*"
    java = ["java", f"-Xmx{daemon_heap}", "-cp", classpath]
    port = free_port()
    procs = [_start([*java, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                     "--webui-port", str(free_port())], workdir / "spark-master.log", env)]
    try:
        _wait_for_port(port, procs[0], workdir / "spark-master.log")
        url = f"spark://127.0.0.1:{port}"
        for i in range(workers):
            (workdir / f"worker-{i}").mkdir(exist_ok=True)
            # Each Spark application's executors fetch the job server's whole classpath (~420 MB, Spark's own jars
            # included: Beam stages every jar it detects); remove the copies of finished applications after 30 s.
            cleanup = ["-Dspark.worker.cleanup.enabled=true", "-Dspark.worker.cleanup.interval=30",
                       "-Dspark.worker.cleanup.appDataTtl=30"]
            procs.append(_start([*java, *cleanup, "org.apache.spark.deploy.worker.Worker", url, "--cores", "1",
                                 "--memory", worker_memory, "--webui-port", str(free_port()),
                                 "--work-dir", str(workdir / f"worker-{i}")],
                                workdir / f"spark-worker-{i}.log", env))
        deadline = time.monotonic() + 120
        while (workdir / "spark-master.log").read_text().count("Registering worker") < workers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Spark workers did not register:\n{(workdir / 'spark-master.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        _stop(procs)


def _limit_address_space(limit_mb: int) -> Callable[[], None]:
    def apply() -> None:  # runs in the child between fork and exec; its children inherit the limit
        resource.setrlimit(resource.RLIMIT_AS, (limit_mb << 20, limit_mb << 20))
    return apply


@contextlib.contextmanager
def sdk_worker_pool(workdir: Path, memory_mb: int | None = None) -> Iterator[int]:
    """Beam's Python worker pool for ``--environment_type=EXTERNAL`` (runners/worker_pool.py: Beam's own pool kills
    the wrong worker when two Spark executors reuse a worker id); yields its port.

    The pool starts one SDK worker *process* per worker the engine asks for (each Spark executor or Flink task
    manager asks for its own), so the Python DoFns run outside the launching process. The workers import this
    checkout (``PYTHONPATH``) with this interpreter (first on ``PATH``): no artifact is installed. ``memory_mb``
    caps the address space (``RLIMIT_AS``) of the pool and of every worker it starts: a worker that needs more
    fails its bundle with a MemoryError instead of growing. glibc keeps at most two malloc arenas
    (``MALLOC_ARENA_MAX=2``): gRPC's threads would otherwise reserve 64 MiB of address space each."""
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
           "MALLOC_ARENA_MAX": "2"}
    log = workdir / "sdk-worker-pool.log"
    with log.open("wb") as f:
        proc = subprocess.Popen([sys.executable, str(REPO / "runners" / "worker_pool.py"), f"--service_port={port}"],
                                stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True,
                                preexec_fn=_limit_address_space(memory_mb) if memory_mb else None)
    try:
        _wait_for_port(port, proc, log)
        yield port
    finally:
        _stop([proc])  # the group: the pool and every SDK worker it started


@contextlib.contextmanager
def engine_job_server(runner: str, workdir: Path, master: str, heap: str = "1g",
                      java_options: list[str] | None = None,
                      worker_pool: int | None = None) -> Iterator[list[str]]:
    """Start Beam's ``runner`` ("spark" or "flink") job server against ``master``; yield the pipeline options.

    Workers run in the launching process (``--environment_type=LOOPBACK``: no Docker here), or, with
    ``worker_pool`` (the port of :func:`sdk_worker_pool`), as separate processes of that pool
    (``--environment_type=EXTERNAL``). The job server is one JVM whose process group is ended on exit.
    ``java_options``: e.g. ``-Dspark.executor.memory=512m`` (Spark reads ``spark.*`` system properties of the
    driver, which the job server is)."""
    jar = job_server_jar(runner)
    port = free_port()
    flag = "--spark-master-url" if runner == "spark" else "--flink-master"
    argv = ["java", f"-Xmx{heap}", *(java_options or []), "-jar", str(jar), "--job-port", str(port),
            "--artifact-port", "0", "--expansion-port", "0", f"{flag}={master}"]
    env = spark_env(workdir) if runner == "spark" else None
    log = workdir / f"{runner}-job-server.log"
    procs = [_start(argv, log, env)]
    try:
        _wait_for_port(port, procs[0], log)
        options = [f"--runner={'SparkRunner' if runner == 'spark' else 'FlinkRunner'}",
                   f"--job_endpoint=localhost:{port}"]
        options += (["--environment_type=EXTERNAL", f"--environment_config=localhost:{worker_pool}"]
                    if worker_pool else ["--environment_type=LOOPBACK"])
        if runner == "flink":
            options += [f"--flink_master={master}", "--parallelism=2"]
        yield options
    finally:
        _stop(procs)


@contextlib.contextmanager
def serve_small_corpus(folder: Path) -> Iterator[Any]:
    """A small demo corpus (photos, drawn shapes, mirrors, duplicates, hostile URLs) written into ``folder`` and served
    on loopback; the server (``wit_builder.demo.server.DemoServer``) carries the corpus as ``.corpus``."""
    from wit_builder.demo import corpus as demo_corpus
    from wit_builder.demo.server import DemoServer

    cfg = demo_corpus.CorpusConfig(train_per_class=1, heldout_per_class=1, flood_extra=0, distractors=2,
                                   mirrors=1, near_duplicates=1, duplicate_pairs=1)
    corpus = demo_corpus.generate(cfg)
    demo_corpus.write_files(corpus, folder)
    with DemoServer(folder / demo_corpus.WWW, corpus.redirects) as server:
        server.corpus = corpus
        yield server


def write_served_pool(queries_dir: str, server: Any, path: str) -> None:
    """The served corpus's pool records as a parquet file at ``path``, each served row's caption (not the
    distractors' or the filtered ones') gaining a seeded query of stage 1's output in ``queries_dir``, so that a
    tiny dump's queries still match it in stage 2."""
    import random

    import pyarrow as pa

    from wit_builder.beam import fileio
    from wit_builder.demo import corpus as demo_corpus

    queries = fileio.read_parquet(fileio.join(queries_dir, "queries.parquet")).column("query").to_pylist()
    rng = random.Random(0)
    records = demo_corpus.pool_records(server.corpus, server.base_url)
    for record in records:
        if record["kind"] not in ("distractor", "filtered"):
            record["caption"] = f"{record['caption']} {rng.choice(queries)}"
    fileio.write_parquet(path, pa.Table.from_pylist(records))
