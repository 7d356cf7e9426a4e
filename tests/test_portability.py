"""Each Beam stage runs unchanged on other runners and filesystems (docs/deploy.md).

For every stage the in-process FnApiRunner output is the reference; the same command line with other Beam
options must give the same rows:

- DirectRunner-style multi-processing (``--direct_running_mode=multi_processing``),
- the portable job service with an EXTERNAL worker pool and ``--setup_file`` (how Flink and Spark run it),
- real engines: Beam's Spark job server on a standalone Spark cluster (a master and two workers from the pyspark
  wheel) and Beam's Flink job server on an embedded Flink (``[local]``), Python DoFns in SDK worker processes of
  Beam's worker pool (EXTERNAL environment, each worker's address space capped), also for the ``wit demo`` chain,
- DataflowRunner ``--dry_run=True``: the job is built and translated, with no network connection attempted,
- an object-store filesystem (``membucket://``, GCS semantics) for every input and output.

Inputs are tiny and real: the first pages of the enwiki sample, a pool matching its queries, images served by
the demo's loopback server (photos, a 404, an HTML page named .jpg, a truncated JPEG).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.runners.portability.stager import Stager

from tests.conftest import BEAM_IN_PROCESS, BEAM_MULTI_PROCESS
from tests.portability_fixtures import (
    MemBucketFileSystem,
    engine_job_server,
    free_port,
    portable_job_service,
    sdk_worker_pool,
    serialized_sdist_builds,
    serve_small_corpus,
    spark_standalone,
    truncated_dump,
    upload_tree,
    write_served_pool,
)
from wit_builder import cli
from wit_builder.beam import fileio
from wit_builder.demo import corpus as demo_corpus
from wit_builder.demo.server import DemoServer

STAGES = ("build-queries", "build-pairs", "download", "finalize")
DATAFLOW = ["--runner=DataflowRunner", "--dry_run=True", "--project=demo", "--region=us-central1",
            "--temp_location=gs://bucket/tmp"]


@pytest.fixture(autouse=True)
def _one_sdist_build_at_a_time(monkeypatch):
    monkeypatch.setattr(Stager, "_build_setup_package", staticmethod(serialized_sdist_builds()))


# ---- stage command lines and what each stage's output must agree on ----

def stage_argv(stage: str, inputs: dict[str, str], out: str) -> list[str]:
    """The stage's command line: ``inputs`` names the upstream folders (or the dump and pool files)."""
    if stage == "build-queries":
        # The default sketch width: its 32 MiB sketches travel as 1 MiB chunks (Flink's sorter refuses larger
        # records, docs/deploy.md).
        return ["build-queries", "--dump", inputs["dump"], "--out", out, "--min-unigram-count", "20",
                "--min-bigram-count", "10"]
    if stage == "build-pairs":
        return ["build-pairs", "--queries", inputs["queries"], "--pool", inputs["pool"], "--out", out,
                "--per-query-cap", "3", "--rows-per-file", "10"]
    if stage == "download":
        return ["download", "--pairs", fileio.join(inputs["pairs"], "pairs-*.parquet"), "--out", out,
                "--image-size", "32", "--rows-per-shard", "6", "--allow-private-networks", "--retries", "0",
                "--timeout", "5"]
    return ["finalize", "--raw", inputs["raw"], "--out", out, "--samples-per-shard", "4"]


def _rows(folder: str, pattern: str, columns: list[str]) -> list[tuple]:
    paths = [m.path for m in FileSystems.match([fileio.join(folder, pattern)])[0].metadata_list]
    rows = [tuple(_hashable(v) for v in row.values())
            for path in paths for row in fileio.read_parquet(path).select(columns).to_pylist()]
    return sorted(rows, key=repr)


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def stage_result(stage: str, out: str) -> dict[str, list]:
    """The rows that must be identical whatever the runner."""
    if stage == "build-queries":
        return {"queries": _rows(out, "queries.parquet", ["query", "source", "count", "score"])}
    if stage == "build-pairs":
        return {"pairs": _rows(out, "pairs-*.parquet", ["uid", "url", "caption", "queries"]),
                "query_counts": _rows(out, "query_counts.parquet", ["query", "matched", "kept"])}
    if stage == "download":
        return {"rows": _rows(out, "*.parquet", ["uid", "status", "sha256", "width", "height"])}
    sizes = fileio.read_json(fileio.join(out, "sizes.json"))
    return {"rows": _rows(out, "accounting/rows/*.parquet", ["uid", "status", "duplicate_of"]),
            "shards": _rows(out, "*.parquet", ["uid", "shard"]), "sizes": [sizes]}


def run_stage(stage: str, inputs: dict[str, str], out: str, beam_argv: list[str]) -> None:
    code = cli.main([*stage_argv(stage, inputs, out), *beam_argv])
    assert code == 0, f"wit {stage} exited {code}"


# ---- shared inputs: the in-process reference chain ----

@pytest.fixture(scope="module")
def served(tmp_path_factory) -> DemoServer:
    """A small demo corpus on a loopback server (photos and drawn shapes, mirrors, hostile URLs)."""
    with serve_small_corpus(tmp_path_factory.mktemp("corpus")) as server:
        yield server


@pytest.fixture(scope="module")
def reference(tmp_path_factory, enwiki_sample, served) -> dict[str, str]:
    """Every stage once in-process: the inputs of the stage tests and the outputs they must reproduce."""
    root = tmp_path_factory.mktemp("reference")
    paths = {"dump": str(truncated_dump(enwiki_sample, root / "enwiki-12-pages.xml.bz2", 12))}
    paths["queries"] = str(root / "queries")
    run_stage("build-queries", paths, paths["queries"], BEAM_IN_PROCESS)
    paths["pool"] = str(root / "pool.parquet")
    write_served_pool(paths["queries"], served, paths["pool"])
    for stage, key in (("build-pairs", "pairs"), ("download", "raw"), ("finalize", "final")):
        paths[key] = str(root / key)
        run_stage(stage, paths, paths[key], BEAM_IN_PROCESS)
    return paths


OUTPUT_KEY = {"build-queries": "queries", "build-pairs": "pairs", "download": "raw", "finalize": "final"}


def test_reference_chain_has_work_for_every_stage(reference):
    """The tiny chain is not vacuous: queries, matches, every download outcome, and dedup all occur."""
    assert len(stage_result("build-queries", reference["queries"])["queries"]) > 20
    assert len(stage_result("build-pairs", reference["pairs"])["pairs"]) > 10
    statuses = {row[1] for row in stage_result("download", reference["raw"])["rows"]}
    assert {"success", "failed_to_download", "failed_to_decode", "blocked"} <= statuses
    final = {row[1] for row in stage_result("finalize", reference["final"])["rows"]}
    assert {"success", "duplicate"} <= final


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_stage_runs_unchanged_multi_processing(stage, reference, tmp_path):
    out = str(tmp_path / "out")
    run_stage(stage, reference, out, BEAM_MULTI_PROCESS)
    assert stage_result(stage, out) == stage_result(stage, reference[OUTPUT_KEY[stage]])


@pytest.fixture(scope="module")
def portable_options(tmp_path_factory) -> list[str]:
    """One job service and worker pool for the module: starting them costs seconds."""
    with portable_job_service(tmp_path_factory.mktemp("job_service")) as options:
        yield options


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_stage_runs_unchanged_on_portable_job_service(stage, reference, portable_options, tmp_path):
    out = str(tmp_path / "out")
    run_stage(stage, reference, out, portable_options)
    assert stage_result(stage, out) == stage_result(stage, reference[OUTPUT_KEY[stage]])


# Address-space cap of each Python SDK worker on the engines (RLIMIT_AS; an idle worker maps ~0.5 GB, the
# largest of bench_scale's at 120k captions ~1.8 GB): the Python side runs in bounded processes, not the launcher.
SDK_WORKER_MEMORY_MB = 2500


@pytest.fixture(scope="module", params=["flink", "spark"])
def engine_options(request, tmp_path_factory) -> list[str]:
    """One engine (and its job server) per module, as starting them costs tens of seconds; Python DoFns run in
    SDK worker processes of a worker pool (``--environment_type=EXTERNAL``), each with capped memory."""
    workdir = tmp_path_factory.mktemp(request.param)
    with contextlib.ExitStack() as stack:
        spark = request.param == "spark"
        master = stack.enter_context(spark_standalone(workdir, workers=2)) if spark else "[local]"
        pool = stack.enter_context(sdk_worker_pool(workdir, SDK_WORKER_MEMORY_MB))
        yield stack.enter_context(engine_job_server(request.param, workdir, master, worker_pool=pool))


@pytest.mark.slow
# LOOPBACK workers log "Multiplexer hanging up" from a gRPC reader thread when the job server closes a bundle's
# data channel after the job: harmless, and not a result of the stage.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.xdist_group("engines")  # one Spark cluster and one Flink at a time (make test: --dist loadgroup)
@pytest.mark.parametrize("stage", STAGES)
def test_stage_runs_unchanged_on_spark_and_flink(stage, reference, engine_options, tmp_path):
    """The same rows as FnApiRunner, and the same stats.json counts: engines retry tasks and report metrics their
    own way, and a count must not depend on either."""
    out = str(tmp_path / "out")
    run_stage(stage, reference, out, engine_options)
    assert stage_result(stage, out) == stage_result(stage, reference[OUTPUT_KEY[stage]])
    assert _stats_counts(out) == _stats_counts(reference[OUTPUT_KEY[stage]])


def _stats_counts(folder: str) -> dict:
    """The record counts of a stage's stats.json: its integer leaves, less timings and sizes in bytes."""
    def ints(value):
        if isinstance(value, dict):
            # top_errors: which error a hostile server's row ends with (deadline or read timeout) depends on load
            kept = {k: ints(v) for k, v in value.items()
                    if not any(w in k for w in ("seconds", "bytes", "timing", "top_errors"))}
            return {k: v for k, v in kept.items() if v not in (None, {})}
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    return ints(fileio.read_json(fileio.join(folder, "stats.json")))


class _Built(BaseException):
    """Raised right after DataflowRunner built the job, so the stage does not read results a dry run lacks."""


@pytest.mark.parametrize("stage", STAGES)
def test_stage_builds_as_dataflow_job(stage, reference, tmp_path, monkeypatch):
    attempts: list = []

    def no_network(sock, address):
        attempts.append(address)
        raise OSError(f"test: network access to {address} refused")

    real_run = beam.Pipeline.run

    def run_and_stop(pipeline, *args, **kwargs):
        with monkeypatch.context() as patch:  # sockets refused only while the runner builds the job
            patch.setattr(socket.socket, "connect", no_network)
            result = real_run(pipeline, *args, **kwargs)
        raise _Built(pipeline, result)

    monkeypatch.setattr(beam.Pipeline, "run", run_and_stop)
    setup_file = [f"--setup_file={Path(__file__).resolve().parents[1] / 'pyproject.toml'}"]
    with pytest.raises(_Built) as built:
        cli.main([*stage_argv(stage, reference, str(tmp_path / "out")), *DATAFLOW, *setup_file])
    pipeline, result = built.value.args
    assert attempts == []
    assert result.job.proto.name  # a Dataflow job request was built from the pipeline
    proto = pipeline.runner.proto_pipeline
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert len(names) > 5
    # --setup_file: the project's sdist is staged as a dependency of the workers' environment.
    artifacts = [a for env in proto.components.environments.values() for a in env.dependencies]
    assert any(b"wit_builder" in a.role_payload or b"wit-builder" in a.role_payload
               or b"workflow.tar.gz" in a.role_payload for a in artifacts), artifacts


@pytest.mark.parametrize("stage", STAGES)
def test_stage_reads_and_writes_an_object_store(stage, reference, served):
    """All inputs uploaded to ``membucket://`` (GCS semantics: no directories), the output written there."""
    bucket = f"membucket://wit/{stage}"
    inputs = {}
    for key in ("queries", "pairs", "raw"):
        upload_tree(Path(reference[key]), f"{bucket}/in/{key}")
        inputs[key] = f"{bucket}/in/{key}"
    for key in ("dump", "pool"):
        local = Path(reference[key])
        MemBucketFileSystem.objects[f"{bucket}/in/{local.name}"] = (local.read_bytes(), 0.0)
        inputs[key] = f"{bucket}/in/{local.name}"
    out = f"{bucket}/out"
    try:
        run_stage(stage, inputs, out, BEAM_IN_PROCESS)
        assert stage_result(stage, out) == stage_result(stage, reference[OUTPUT_KEY[stage]])
        assert not [k for k in MemBucketFileSystem.objects if k.startswith(out) and ".tmp" in k]  # no temp left
        spilled = [k for k in MemBucketFileSystem.objects if k.startswith(f"{out}/_tmp_spill/")]
        assert not spilled  # the in-process run's spilled shuffles, object by object (wit_builder.beam.spill)
    finally:
        for key in [k for k in MemBucketFileSystem.objects if k.startswith(bucket)]:
            del MemBucketFileSystem.objects[key]


# ---- the demo chain (wit demo: build-queries, build-pairs, download, finalize, then train and eval) ----

DEMO_CORPUS = {"train_per_class": 1, "heldout_per_class": 1, "flood_extra": 0, "distractors": 2, "mirrors": 1,
               "near_duplicates": 1, "duplicate_pairs": 1}
DEMO_STAGES = {"build-queries": "queries", "build-pairs": "pairs", "download": "raw", "finalize": "shards"}
# CI runs the demo chain on Flink only (Spark's per-stage start-up costs minutes); WIT_DEMO_ENGINES=flink,spark
# runs it on both.
DEMO_ENGINES = set(os.environ.get("WIT_DEMO_ENGINES", "flink").split(","))


def run_demo(out: Path, port: int, beam_argv: list[str], monkeypatch) -> None:
    """``wit demo`` on a small corpus with a short training run; Beam options pass through to stages 1-4."""
    small = functools.partial(demo_corpus.CorpusConfig, **DEMO_CORPUS)
    with monkeypatch.context() as patch:
        patch.setattr(demo_corpus, "CorpusConfig", small)
        code = cli.main(["demo", "--out", str(out), "--port", str(port), "--steps", "4", "--batch-size", "8",
                         "--workers", "0", *beam_argv])
    assert code == 0, f"wit demo exited {code}"


@pytest.fixture(scope="module")
def demo_reference(tmp_path_factory, monkeypatch_module) -> tuple[Path, int]:
    """The demo chain in-process: the outputs an engine's run must reproduce (same port, so same URLs)."""
    out = tmp_path_factory.mktemp("demo-fnapi")
    port = free_port()
    run_demo(out, port, BEAM_IN_PROCESS, monkeypatch_module)
    return out, port


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.xdist_group("engines")
def test_demo_chain_runs_unchanged_on_spark_and_flink(engine_options, demo_reference, tmp_path, monkeypatch):
    """``wit demo --runner=FlinkRunner ...`` (or SparkRunner): every Beam stage's rows and stats counts equal the
    in-process demo's, with stage 1's default sketch width (sent in 1 MiB chunks: Flink refuses a 32 MiB record),
    and the chain goes on to train and evaluate on the engine-built shards."""
    runner = "spark" if "--runner=SparkRunner" in engine_options else "flink"
    if runner not in DEMO_ENGINES:
        pytest.skip(f"the demo chain on {runner} runs with WIT_DEMO_ENGINES={runner} (minutes of start-up)")
    reference, port = demo_reference
    out = tmp_path / "demo"
    run_demo(out, port, engine_options, monkeypatch)
    for stage, folder in DEMO_STAGES.items():
        assert stage_result(stage, str(out / folder)) == stage_result(stage, str(reference / folder)), stage
        assert _stats_counts(str(out / folder)) == _stats_counts(str(reference / folder)), stage
    assert len(stage_result("finalize", str(out / "shards"))["shards"]) > 5
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["samples"] == json.loads((reference / "demo_summary.json").read_text())["samples"]
    assert 0.0 <= summary["zeroshot_acc1"] <= 1.0 and (out / "eval" / "eval.json").exists()
