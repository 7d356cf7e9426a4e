"""Stages 2-4 on a real S3-protocol server (issue 24): moto's standalone server (``moto[server]`` from PyPI) on
127.0.0.1, reached through Beam's own S3 filesystem (``apache-beam[aws]``, boto3) and its options
(``--s3_endpoint_url``, ``--s3_access_key_id``, ...); and on ``gs://`` against a GCS emulator
(``gcp-storage-emulator`` from PyPI) through Beam's GCS filesystem (``STORAGE_EMULATOR_HOST``, anonymous).

build-pairs, download and finalize read their inputs from ``s3://`` and write their outputs there; each output
must hold the same rows as the same stage run on local folders, no temporary object may be left, the completion
files (plan.json, ``{shard}_stats.json``, sizes.json, stats.json) must be where a rerun looks for them: a rerun
resumes, a shard whose completion file is missing (a killed run) is made again and its temporaries go,
``--retry-failed`` rewrites shards by rename. An unreachable endpoint, refused credentials and a missing bucket
are one line naming the URL and the setting to fix, in seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from tests.conftest import BEAM_IN_PROCESS
from tests.portability_fixtures import free_port, serve_small_corpus, truncated_dump, write_served_pool
from wit_builder import cli
from wit_builder.beam import fileio
from wit_builder.demo.server import DemoServer

boto3 = pytest.importorskip("boto3", reason="apache-beam[aws] (boto3) is a test dependency")
pytest.importorskip("moto", reason="moto[server] is a test dependency")
import botocore.exceptions  # noqa: E402 -- boto3's own dependency, present once the skip above passed

KEY = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


class MotoServer:
    """``python -m moto.server`` on a free loopback port; ``env`` adds to its environment."""

    def __init__(self, log: Path, **env: str) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **env})
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client().list_buckets()
                return
            except botocore.exceptions.ClientError:  # it answers (a server that checks credentials refuses ours)
                return
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint, **KEY)

    def beam_args(self, key: str = "testing") -> list[str]:
        return [f"--s3_endpoint_url={self.endpoint}", f"--s3_access_key_id={key}",
                f"--s3_secret_access_key={key}", "--s3_region_name=us-east-1"]

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def upload_tree(self, local: Path, bucket: str, prefix: str) -> None:
        for path in sorted(local.rglob("*")):
            if path.is_file():
                self.client().upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local).as_posix()}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self._log.close()


@pytest.fixture(scope="module")
def moto(tmp_path_factory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        server.client().create_bucket(Bucket="wit")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[DemoServer]:
    """A small demo corpus on a loopback server (photos, drawn shapes, mirrors, duplicates, hostile URLs)."""
    with serve_small_corpus(tmp_path_factory.mktemp("corpus")) as server:
        yield server


def _argv(stage: str, inputs: dict[str, str], out: str) -> list[str]:
    if stage == "build-pairs":
        return ["build-pairs", "--queries", inputs["queries"], "--pool", inputs["pool"], "--out", out,
                "--per-query-cap", "3", "--rows-per-file", "10"]
    if stage == "download":
        return ["download", "--pairs", inputs["pairs"], "--out", out, "--image-size", "32", "--rows-per-shard",
                "6", "--allow-private-networks", "--retries", "0", "--timeout", "5"]
    return ["finalize", "--raw", inputs["raw"], "--out", out, "--samples-per-shard", "4"]


def _run(stage: str, inputs: dict[str, str], out: str, beam_argv: list[str]) -> None:
    assert cli.main([*_argv(stage, inputs, out), *beam_argv]) == 0, f"wit {stage} failed"


def _rows(folder: str, pattern: str, columns: list[str]) -> list[tuple]:
    rows = [tuple(tuple(v) if isinstance(v, list) else v for v in row.values())
            for path in fileio.match(fileio.join(folder, pattern))
            for row in fileio.read_parquet(path).select(columns).to_pylist()]
    return sorted(rows, key=repr)


def _result(stage: str, out: str) -> dict[str, list]:
    if stage == "build-pairs":
        return {"pairs": _rows(out, "pairs-*.parquet", ["uid", "url", "caption", "queries"]),
                "query_counts": _rows(out, "query_counts.parquet", ["query", "matched", "kept"])}
    if stage == "download":
        return {"rows": _rows(out, "[0-9]*.parquet", ["uid", "status", "sha256", "width", "height", "key"])}
    return {"rows": _rows(out, "accounting/rows/*.parquet", ["uid", "status", "duplicate_of", "key"]),
            "shards": _rows(out, "[0-9]*.parquet", ["uid", "shard", "key"]),
            "sizes": [fileio.read_json(fileio.join(out, "sizes.json"))]}


@pytest.fixture(scope="module")
def local(tmp_path_factory, enwiki_sample, served) -> dict[str, str]:
    """The queries and pool (local inputs), and stages 2-4 run on local folders: the reference."""
    root = tmp_path_factory.mktemp("local")
    paths = {"dump": str(truncated_dump(enwiki_sample, root / "enwiki-12-pages.xml.bz2", 12)),
             "queries": str(root / "queries")}
    assert cli.main(["build-queries", "--dump", paths["dump"], "--out", paths["queries"], "--min-unigram-count",
                     "20", "--min-bigram-count", "10", *BEAM_IN_PROCESS]) == 0
    paths["pool"] = str(root / "pool.parquet")
    write_served_pool(paths["queries"], served, paths["pool"])
    for stage, key in (("build-pairs", "pairs"), ("download", "raw"), ("finalize", "final")):
        paths[key] = str(root / key)
        _run(stage, paths, paths[key], BEAM_IN_PROCESS)
    return paths


@pytest.mark.slow
def test_pairs_download_finalize_on_s3(moto, local, served):
    args = [*moto.beam_args(), *BEAM_IN_PROCESS]
    moto.upload_tree(Path(local["queries"]), "wit", "in/queries")
    moto.client().upload_file(local["pool"], "wit", "in/pool.parquet")
    s3 = {"queries": "s3://wit/in/queries", "pool": "s3://wit/in/pool.parquet", "pairs": "s3://wit/pairs",
          "raw": "s3://wit/raw", "final": "s3://wit/final"}
    for stage, key in (("build-pairs", "pairs"), ("download", "raw"), ("finalize", "final")):
        _run(stage, s3, s3[key], args)
        assert _result(stage, s3[key]) == _result(stage, local[key]), stage
    keys = moto.keys("wit")
    assert not [k for k in keys if ".tmp-" in k or k.endswith("/_counts.json") or "/_sizes" in k], keys
    assert {"pairs/stats.json", "raw/plan.json", "raw/stats.json", "final/stats.json", "final/sizes.json",
            "final/DATASET.md", "raw/00000_stats.json"} <= set(keys)
    # the raw tars hold the same members as on disk: finalize read them by offset from S3
    local_tars = sorted(p.name for p in Path(local["raw"]).glob("*.tar"))
    assert [k.removeprefix("raw/") for k in keys if k.startswith("raw/") and k.endswith(".tar")] == local_tars
    for name in local_tars:
        body = moto.client().get_object(Bucket="wit", Key=f"raw/{name}")["Body"].read()
        assert body == (Path(local["raw"]) / name).read_bytes(), name

    # a rerun resumes: every shard is complete, nothing is downloaded, no byte changes
    before = {k: moto.client().get_object(Bucket="wit", Key=k)["ETag"] for k in keys if k.startswith("raw/0")}
    _run("download", s3, s3["raw"], args)
    assert {k: moto.client().get_object(Bucket="wit", Key=k)["ETag"] for k in before} == before

    # a killed run: shard 1 lost its completion file and left a temporary behind; the rerun makes that shard
    # again (the same bytes) and removes the temporary
    moto.client().delete_object(Bucket="wit", Key="raw/00001_stats.json")
    moto.client().put_object(Bucket="wit", Key="raw/00001.tar.tmp-0123abcd", Body=b"half a tar")
    _run("download", s3, s3["raw"], args)
    after = moto.keys("wit", "raw/")
    assert "raw/00001_stats.json" in after and not [k for k in after if ".tmp-" in k]
    assert _result("download", s3["raw"]) == _result("download", local["raw"])

    # --retry-failed rewrites shards in place by temp-then-rename on the store too
    # (the demo's failures are permanent: 404, HTML, truncated; nothing transient to fetch again)
    assert cli.main([*_argv("download", s3, s3["raw"]), "--retry-failed", *args]) == 0
    assert not [k for k in moto.keys("wit", "raw/") if ".tmp-" in k]
    assert _result("download", s3["raw"]) == _result("download", local["raw"])


def test_bad_object_store_settings_are_one_line(moto, tmp_path, capsys):
    table = pa.Table.from_pylist([{"uid": "u", "url": "http://127.0.0.1:9/a.jpg", "caption": "a", "queries": ["a"]}])
    fileio.write_parquet(str(tmp_path / "pairs-00000.parquet"), table)
    pairs = ["download", "--pairs", str(tmp_path), "--image-size", "32"]
    # unreachable endpoint: a closed port
    closed = free_port()
    started = time.monotonic()
    code = cli.main([*pairs, "--out", "s3://wit/nowhere", f"--s3_endpoint_url=http://127.0.0.1:{closed}",
                     "--s3_access_key_id=testing", "--s3_secret_access_key=testing", *BEAM_IN_PROCESS])
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - started < 30
    assert err.count("\n") == 1 and "s3://wit" in err and "--s3_endpoint_url" in err, err
    # a bucket that does not exist
    code = cli.main([*pairs, "--out", "s3://no-such-bucket/raw", *moto.beam_args(), *BEAM_IN_PROCESS])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "s3://no-such-bucket: no such bucket" in err, err
    # refused credentials: a second server that checks them (moto's IAM auth from the first request on)
    strict = MotoServer(tmp_path / "strict.log", INITIAL_NO_AUTH_ACTION_COUNT="0")
    try:
        code = cli.main([*pairs, "--out", "s3://wit/raw", *strict.beam_args("wrong-key"), *BEAM_IN_PROCESS])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert "s3://wit: the object store" in err and "refused the credentials" in err and "--s3_access_key_id" in err
    finally:
        strict.stop()


def test_an_endpoint_without_its_scheme_names_the_setting(tmp_path, capsys):
    # "--s3_endpoint_url 127.0.0.1:9000" (no http://): botocore's bare "Invalid endpoint" named no setting
    table = pa.Table.from_pylist([{"uid": "u", "url": "http://127.0.0.1:9/a.jpg", "caption": "a", "queries": ["a"]}])
    fileio.write_parquet(str(tmp_path / "pairs-00000.parquet"), table)
    code = cli.main(["download", "--pairs", str(tmp_path), "--image-size", "32", "--out", "s3://wit/raw",
                     "--s3_endpoint_url=127.0.0.1:9000", "--s3_access_key_id=testing",
                     "--s3_secret_access_key=testing", *BEAM_IN_PROCESS])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "s3://wit: --s3_endpoint_url '127.0.0.1:9000' is not a URL" in err and "http://HOST:PORT" in err, err


class GcsEmulator:
    """``gcp-storage-emulator`` (in memory) on a free loopback port."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "start", "--host=127.0.0.1",
                                      f"--port={self.port}", "--in-memory"], stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/storage/v1/b", timeout=2).read()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"GCS emulator did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self._log.close()


@pytest.mark.slow
def test_pairs_download_finalize_on_gcs_emulator(local, served, tmp_path, monkeypatch):
    pytest.importorskip("gcp_storage_emulator", reason="gcp-storage-emulator is a test dependency")
    from google.cloud import storage

    emulator = GcsEmulator(tmp_path / "gcs.log")
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.endpoint)
        client = storage.Client.create_anonymous_client()
        bucket = client.create_bucket("wit")
        for path in sorted(Path(local["queries"]).rglob("*")):
            if path.is_file():
                bucket.blob(f"in/queries/{path.relative_to(local['queries']).as_posix()}").upload_from_filename(
                    str(path))
        bucket.blob("in/pool.parquet").upload_from_filename(local["pool"])
        gs = {"queries": "gs://wit/in/queries", "pool": "gs://wit/in/pool.parquet", "pairs": "gs://wit/pairs",
              "raw": "gs://wit/raw", "final": "gs://wit/final"}
        for stage, key in (("build-pairs", "pairs"), ("download", "raw"), ("finalize", "final")):
            _run(stage, gs, gs[key], BEAM_IN_PROCESS)
            assert _result(stage, gs[key]) == _result(stage, local[key]), stage
        names = sorted(b.name for b in client.list_blobs("wit"))
        assert not [n for n in names if ".tmp-" in n or n.endswith("/_counts.json")], names
        assert {"raw/plan.json", "raw/stats.json", "final/stats.json", "final/sizes.json"} <= set(names)
        bucket.blob("raw/00001_stats.json").delete()  # a killed run: the shard is made again, nothing else
        _run("download", gs, gs["raw"], BEAM_IN_PROCESS)
        assert _result("download", gs["raw"]) == _result("download", local["raw"])
    finally:
        emulator.stop()
