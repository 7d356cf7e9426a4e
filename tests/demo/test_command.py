"""``wit demo``'s wiring: each stage's flags parse with that stage's own parser; reruns reuse finished stages.

The full chain takes minutes (``make demo``); here each ``wit`` call is checked against the real subcommand's
argument parser and recorded instead of run, and the stage bookkeeping is tested on its own.
"""

from __future__ import annotations

import argparse
import functools
import json

import pyarrow.parquet as pq
import pytest

from tests.demo.conftest import record_stage_calls
from wit_builder.core import errors, options
from wit_builder.demo import command as demo
from wit_builder.demo import corpus as demo_corpus
from wit_builder.demo import options as demo_options

SMALL = functools.partial(demo_corpus.CorpusConfig, train_per_class=2, heldout_per_class=1, flood_extra=1,
                          distractors=2, mirrors=1, near_duplicates=1, duplicate_pairs=1)


def _demo_args(out, *extra: str) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser()
    options.add_arguments(parser, demo_options.OPTIONS)
    return parser.parse_known_args(["--out", str(out), *extra, "--runner=FnApiRunner"])


@pytest.fixture
def recorded(monkeypatch) -> list[list[str]]:
    """Replace running a stage by parsing its argv with the stage's real parser, and record it."""
    calls = record_stage_calls(monkeypatch)
    monkeypatch.setattr(demo.demo_corpus, "CorpusConfig", SMALL)
    monkeypatch.setattr(demo, "check_classes", lambda folder, classes: [])
    monkeypatch.setattr(demo, "report", lambda *a, **k: None)
    return calls


def test_every_stage_flag_is_accepted_and_reruns_reuse_finished_stages(recorded, tmp_path):
    args, beam_argv = _demo_args(tmp_path)
    assert demo.run(args, beam_argv) == 0
    assert [c[0] for c in recorded] == ["build-queries", "build-pairs", "download", "finalize", "train", "eval"]
    download = recorded[2]
    assert "--allow-private-networks" in download and "--allow-link-local" not in download
    assert recorded[3][recorded[3].index("--decontaminate") + 1] == str(tmp_path / "corpus" / "heldout")
    assert all("--runner=FnApiRunner" in c for c in recorded[:4])  # Beam options reach the Beam stages only
    assert not any("--runner=FnApiRunner" in c for c in recorded[4:])

    pool = pq.read_table(tmp_path / "corpus" / "pool.parquet").to_pylist()
    port = json.loads((tmp_path / "corpus" / "server.json").read_text())["port"]
    assert {r["kind"] for r in pool} >= {"train", "http_404", "link_local", "distractor"}
    assert all(r["url"].startswith(f"http://127.0.0.1:{port}/") for r in pool if r["kind"] == "train")

    recorded.clear()
    assert demo.run(args, beam_argv) == 0
    assert recorded == []  # everything reused, and the pool kept its address

    recorded.clear()
    args, beam_argv = _demo_args(tmp_path, "--steps", "7")
    assert demo.run(args, beam_argv) == 0
    assert [c[0] for c in recorded] == ["train", "eval"]  # only what depends on the changed setting
    assert recorded[0][recorded[0].index("--steps") + 1] == "7"


def test_a_failing_stage_stops_the_chain_with_its_name(recorded, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(demo.cli, "main", lambda argv: 2 if argv[0] == "download" else 0)
    args, beam_argv = _demo_args(tmp_path)
    with pytest.raises(demo.DemoError, match="'wit download' failed with exit status 2") as failed:
        demo.run(args, beam_argv)
    assert errors.exit_code(failed.value) == 1  # the cli prints it in one line, exit 1
    assert not (tmp_path / "raw" / demo.DONE).exists() and (tmp_path / "pairs" / demo.DONE).exists()


def test_stage_resumes_same_inputs_and_restarts_changed_ones(tmp_path):
    folder = tmp_path / "raw"
    first = demo.DemoStep("download", folder, "aaaa", force=False)
    assert not first.done()
    first.begin()
    (folder / "00000.tar").write_bytes(b"partial")  # killed before finishing
    demo.DemoStep("download", folder, "aaaa", force=False).begin()
    assert (folder / "00000.tar").exists()  # same inputs: resumed, the stage skips its finished shards
    changed = demo.DemoStep("download", folder, "bbbb", force=False)
    changed.begin()
    assert not (folder / "00000.tar").exists()  # other inputs: started over
    changed.finish(1.5)
    assert changed.done() and changed.seconds() == 1.5
    assert not demo.DemoStep("download", folder, "aaaa", force=False).done()
    assert not demo.DemoStep("download", folder, "bbbb", force=True).done()


def test_pool_follows_the_server_address(tmp_path):
    corpus = demo_corpus.generate(SMALL())
    manifest = demo_corpus.write_files(corpus, tmp_path)
    manifest["rows"] = [r.__dict__ for r in corpus.rows]
    path = demo.write_pool(tmp_path, manifest, "http://127.0.0.1:1111")
    stamp = path.stat().st_mtime_ns
    assert demo.write_pool(tmp_path, manifest, "http://127.0.0.1:1111").stat().st_mtime_ns == stamp
    demo.write_pool(tmp_path, manifest, "http://127.0.0.1:2222")
    urls = pq.read_table(path).column("url").to_pylist()
    assert any(u.startswith("http://127.0.0.1:2222/img/") for u in urls)
    assert not any(":1111/" in u for u in urls)


def test_server_port_is_stable_across_runs_and_a_taken_port_is_named(tmp_path):
    corpus = demo_corpus.generate(SMALL())
    demo_corpus.write_files(corpus, tmp_path)
    with demo.start_server(tmp_path, 0) as first:
        (tmp_path / demo.SERVER_JSON).write_text(json.dumps({"port": first.port}))
        with pytest.raises(demo.DemoError, match=f"port {first.port}"):
            demo.start_server(tmp_path, first.port)
    with demo.start_server(tmp_path, 0) as again:
        assert again.port == first.port  # the recorded port, so the pool's URLs stay the same


def test_stage_counts_read_the_one_stats_layout(tmp_path):
    from schemas import stats as stats_schema

    dirs = {name: tmp_path / name for name in ("queries", "pairs", "raw", "shards", "train")}
    for folder in dirs.values():
        folder.mkdir()

    def write(name: str, stage: str, counts: dict, details: dict | None = None) -> None:
        doc = stats_schema.envelope(stage, inputs=[], parameters={}, counts=counts, outputs=[], seconds=1.0,
                                    details=details)
        (dirs[name] / "stats.json").write_text(json.dumps(doc))

    table = {s: {"selected": n} for s, n in (("unigram", 5), ("title", 2))}
    write("queries", "build-queries", {"queries": 7}, {"sources": table})
    write("pairs", "build-pairs", {"records": 100, "candidates": 90, "matched": 40, "no_match": 50,
                                   "unique_pairs": 35, "kept": 30, "over_cap": 5})
    write("raw", "download", {"rows": 30, "status_success": 25, "status_blocked": 5, "status_filtered": 0})
    write("shards", "finalize", {"reason_exact_duplicate": 2, "reason_over_cap": 0, "samples": 23, "shards": 1})
    (dirs["train"] / "metrics.jsonl").write_text('{"step": 1, "loss": 4.0}\n{"step": 9, "loss": 2.5}\n')
    lines = demo.stage_counts(dirs)
    assert lines[0] == "build-queries  7 queries (unigram 5, title 2)"
    assert "100 pool rows -> 90 candidates -> 40 matched (50 no match) -> 35 unique -> 30 kept (5 over" in lines[1]
    assert lines[2] == "download       success 25, blocked 5"
    assert lines[3] == "finalize       exact_duplicate 2 -> 23 samples in 1 shards"
    assert lines[4] == "train          9 steps, loss 4.000 -> 2.500"

    (dirs["raw"] / "stats.json").write_text(json.dumps({"statuses": {"success": 25}}))  # an old layout
    with pytest.raises(stats_schema.StatsError, match="top-level keys"):
        demo.stage_counts(dirs)


def test_an_out_of_someone_elses_files_is_refused_untouched(recorded, tmp_path):
    """``wit demo --out`` pointing at a folder of a user's files: refused naming the flag, nothing written, no
    stage run; a folder the demo marked itself is reused."""
    (tmp_path / "thesis.tex").write_text("mine")
    args, beam_argv = _demo_args(tmp_path)
    with pytest.raises(errors.UsageError, match=r"holds files that wit did not write \('thesis.tex'\).*--overwrite"):
        demo.run(args, beam_argv)
    assert [p.name for p in tmp_path.iterdir()] == ["thesis.tex"] and recorded == []
    args, beam_argv = _demo_args(tmp_path, "--overwrite")
    assert demo.run(args, beam_argv) == 0 and (tmp_path / "thesis.tex").read_text() == "mine"
    args, beam_argv = _demo_args(tmp_path)
    assert demo.run(args, beam_argv) == 0  # marked as the demo's now
