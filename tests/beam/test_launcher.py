"""The one launcher of a Beam stage (wit_builder.beam.launcher): ``run_stage`` on a probe stage whose hooks the
tests script (checks before work -> UsageError, exit 2; our error inside the run -> StageFailed, exit 1; the counts
read back and passed to ``finish``; the Outcome's lines and exit code), ``run_pipeline``'s handling of Beam's log,
and the offline default runner."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import StandardOptions

from tests.conftest import BEAM_IN_PROCESS, ProbeOptions, run_failing_pipeline
from wit_builder.beam import fileio, launcher
from wit_builder.beam.counting import COUNTS, COUNTS_FILE, Drop, RuleDoFn, WriteCounts
from wit_builder.beam.launcher import Outcome, Stage, run_stage
from wit_builder.core import errors, run_folder


class BadNumber(errors.InputError):
    """The probe stage's own error class (as a stage's DumpError or RawInputError is)."""


def keep_even(n: int) -> Iterator[int | Drop]:
    """The probe's rule: even numbers go on, odd ones are dropped as ``odd``; 13 is a bad record; 99 a bug."""
    if n == 13:
        raise BadNumber(f"numbers.txt: record {n}: unlucky")
    if n == 99:
        raise ZeroDivisionError("a bug in the rule")
    yield n if n % 2 == 0 else Drop("odd", n)


class ProbeStage(Stage[ProbeOptions, tuple[int, ...]]):
    """A stage whose hooks record their calls; ``resolve`` returns ``numbers`` (the inputs) or raises ``problem``;
    ``finish`` keeps the counts it was given and returns ``outcome``."""

    name = "probe"
    namespace = "probe"
    count_names = ("kept", "odd", "never_counted")

    def __init__(self, options: ProbeOptions, numbers: list[int] | None = None, problem: Exception | None = None,
                 outcome: Outcome | None = None, run: bool = True) -> None:
        super().__init__(options)
        self.numbers = list(range(10)) if numbers is None else numbers
        self.problem, self.run = problem, run
        self.outcome = outcome or Outcome(["10 numbers"])
        self.calls: list[str] = []
        self.counts: dict[str, int] | None = None

    def resolve(self) -> tuple[int, ...]:
        self.calls.append("resolve")
        if self.problem is not None:
            raise self.problem
        return tuple(self.numbers)

    def announce(self) -> list[str]:
        self.calls.append("announce")
        return [f"reading {len(self.inputs)} numbers from numbers.txt"]

    def clean_rerun(self) -> list[str]:
        self.calls.append("clean_rerun")
        return ["removed an earlier run's part-0"]

    def needs_run(self) -> bool:
        return self.run

    def build(self, pipeline: beam.Pipeline) -> None:
        self.calls.append("build")
        judged = (pipeline | beam.Create(self.inputs)
                  | beam.ParDo(RuleDoFn(keep_even, kept_as="kept", namespace=self.namespace))
                  .with_outputs(COUNTS, main="kept"))
        _ = judged[COUNTS] | WriteCounts(fileio.join(self.out, COUNTS_FILE))

    def on_failure(self, error: errors.StageFailed) -> errors.StageFailed:
        self.calls.append("on_failure")
        return errors.StageFailed(f"{error}; the parts written so far are kept")

    def after_run(self) -> None:
        self.calls.append("after_run")

    def finish(self, counts: dict[str, int], seconds: float) -> Outcome:
        self.calls.append("finish")
        self.counts = counts
        return self.outcome


def probe(out: Path, **kwargs) -> ProbeStage:
    return ProbeStage(ProbeOptions(out=str(out)), **kwargs)


# ---- a run ----

def test_the_counts_are_read_back_and_passed_to_finish(tmp_path, capsys):
    out = tmp_path / "o"
    stage = probe(out, outcome=Outcome(["10 numbers", "5 kept"], warnings=["half the numbers are odd"]))
    assert run_stage(stage, BEAM_IN_PROCESS) == 0
    assert stage.calls == ["resolve", "announce", "clean_rerun", "build", "after_run", "finish"]
    assert stage.counts == {"kept": 5, "never_counted": 0, "odd": 5}  # count_names never seen are 0
    assert stage.monitoring == {"kept": 5, "odd": 5}  # Beam's counters, for monitoring
    assert not (out / COUNTS_FILE).exists()  # read once, then removed
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[:2] == ["reading 10 numbers from numbers.txt", "removed an earlier run's part-0"]
    assert re.fullmatch(rf"wit probe: 10 numbers; 5 kept; \d+\.\d s -> {re.escape(str(out))}", lines[-1]), lines
    assert captured.err == "wit probe: warning: half the numbers are odd\n"


def test_the_outcomes_error_line_and_exit_code(tmp_path, capsys, probe_command):
    failed = Outcome(["10 numbers"], exit_code=errors.EXIT_FAILED, error="3 of 10 shards failed; rerun to retry")
    assert run_stage(probe(tmp_path / "o", outcome=failed), BEAM_IN_PROCESS) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1].startswith("wit probe: 10 numbers; ")  # the summary line still comes
    assert captured.err == "wit probe: 3 of 10 shards failed; rerun to retry\n"
    wit_probe = probe_command(lambda options, beam_argv: run_stage(ProbeStage(options, outcome=failed), beam_argv))
    assert wit_probe("--out", str(tmp_path / "o2"), *BEAM_IN_PROCESS) == 1


def test_a_stage_with_nothing_to_run_finishes_without_a_pipeline(tmp_path, capsys):
    out = tmp_path / "o"
    stage = probe(out, run=False)
    assert run_stage(stage, BEAM_IN_PROCESS) == 0
    assert stage.calls == ["resolve", "announce", "clean_rerun", "finish"] and stage.counts == {}
    assert out.is_dir()  # the output folder is made before the hooks that write
    assert capsys.readouterr().out.splitlines()[-1].startswith("wit probe: 10 numbers; ")


def test_the_inputs_are_resolved_first_and_announced_before_the_run(tmp_path, capsys, monkeypatch):
    stage = probe(tmp_path / "o", numbers=[2, 4, 5])
    with pytest.raises(RuntimeError, match=r"resolve\(\) first"):
        _ = stage.inputs
    printed_before_the_run: list[str] = []
    build = stage.build

    def build_after_reading_the_terminal(pipeline: beam.Pipeline) -> None:
        printed_before_the_run.extend(capsys.readouterr().out.splitlines())
        build(pipeline)

    monkeypatch.setattr(stage, "build", build_after_reading_the_terminal)
    assert run_stage(stage, BEAM_IN_PROCESS) == 0
    assert stage.inputs == (2, 4, 5) and stage.counts == {"kept": 2, "never_counted": 0, "odd": 1}
    assert printed_before_the_run == ["reading 3 numbers from numbers.txt", "removed an earlier run's part-0"]
    assert stage.calls == ["resolve", "announce", "clean_rerun", "build", "after_run", "finish"]


# ---- checks before work: one line, exit 2, nothing written ----

@pytest.mark.parametrize("kind", [FileNotFoundError, ValueError, KeyError, BadNumber, errors.UsageError])
def test_an_error_in_resolve_is_a_usage_error_before_any_work(kind, tmp_path, capsys, probe_command):
    said = "--pool 'x*' matches no file"
    problem = kind(said)  # a KeyError's message too is said as it is, not quoted
    out = tmp_path / "o"
    stage = probe(out, problem=problem)
    with pytest.raises(errors.UsageError) as raised:
        run_stage(stage, BEAM_IN_PROCESS)
    assert str(raised.value) == said
    assert stage.calls == ["resolve"] and not out.exists()
    wit_probe = probe_command(lambda options, beam_argv: run_stage(ProbeStage(options, problem=problem), beam_argv))
    assert wit_probe("--out", str(out), *BEAM_IN_PROCESS) == 2
    captured = capsys.readouterr()
    assert captured.err == f"wit probe: error: {said}\n" and captured.out == ""
    assert not out.exists()


def test_an_out_that_is_a_file_or_an_unknown_runner_is_refused_first(tmp_path):
    existing = tmp_path / "stats.json"
    existing.write_text("{}")
    stage = probe(existing)
    with pytest.raises(errors.UsageError, match="is a file, not a folder"):
        run_stage(stage, BEAM_IN_PROCESS)
    assert stage.calls == []  # refused before resolve
    stage = probe(tmp_path / "o")
    with pytest.raises(errors.UsageError, match="unknown --runner 'SparkRuner'; did you mean 'SparkRunner'"):
        run_stage(stage, ["--runner=SparkRuner"])
    assert not (tmp_path / "o").exists()


# ---- errors inside the run ----

def test_our_error_inside_the_run_is_stage_failed_exit_1(tmp_path, capsys, probe_command):
    stage = probe(tmp_path / "o", numbers=[2, 13, 4])
    with pytest.raises(errors.StageFailed,
                       match=r"^numbers.txt: record 13: unlucky.*; the parts written so far are kept$"):
        run_stage(stage, BEAM_IN_PROCESS)
    assert stage.calls == ["resolve", "announce", "clean_rerun", "build", "on_failure", "after_run"]  # no finish
    capsys.readouterr()
    wit_probe = probe_command(lambda options, beam_argv: run_stage(ProbeStage(options, numbers=[13]), beam_argv))
    assert wit_probe("--out", str(tmp_path / "o2"), *BEAM_IN_PROCESS) == 1
    err = capsys.readouterr().err
    assert err.startswith("wit probe: error: numbers.txt: record 13: unlucky") and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_a_bug_inside_the_run_keeps_its_traceback_and_still_cleans_up(tmp_path):
    stage = probe(tmp_path / "o", numbers=[99])
    with pytest.raises(Exception, match="a bug in the rule") as raised:
        run_stage(stage, BEAM_IN_PROCESS)
    assert not isinstance(raised.value, errors.WitError)
    assert stage.calls == ["resolve", "announce", "clean_rerun", "build", "after_run"]


def test_beams_log_of_our_error_stays_off_the_terminal(probe_command, tmp_path, capsys):
    error = BadNumber("dump.xml: malformed XML at line 7, after page id 4")
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    root.addHandler(handler)
    try:
        assert probe_command(lambda o, b: run_failing_pipeline(error, str(tmp_path), b))(*BEAM_IN_PROCESS) == 1
    finally:
        root.removeHandler(handler)
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("malformed XML") == 1
    assert "malformed XML at line 7" in (tmp_path / launcher.BEAM_ERRORS_LOG).read_text()


# ---- pipeline options ----

def test_the_in_process_runner_unless_one_is_named():
    assert launcher.pipeline_options([]).view_as(StandardOptions).runner == launcher.DEFAULT_RUNNER
    named = launcher.pipeline_options(["--runner", "DirectRunner", "--direct_num_workers=2"])
    assert named.view_as(StandardOptions).runner == "DirectRunner"
    assert launcher.pipeline_options(["--runner=apache_beam.runners.direct.DirectRunner"])  # a full class name


def test_monitoring_counters_that_differ_from_the_counts_are_logged_not_fatal(tmp_path, caplog):
    stage = probe(tmp_path / "o")
    stage.monitoring = {"kept": 7, "odd": 5, "retried": 1}  # a retried bundle counted twice by attempted metrics
    with caplog.at_level(logging.INFO, logger=launcher.__name__):
        launcher._cross_check(stage, {"kept": 5, "odd": 5, "never_counted": 0})
    assert [r.getMessage() for r in caplog.records] == [
        "probe: monitoring counters differ from the data-derived counts (counts, counter): {'kept': (5, 7)}"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=launcher.__name__):
        launcher._cross_check(stage, {"kept": 7, "odd": 5})
    assert caplog.records == []


# ---- the output folder: ours (run marker), one writer (lock), our temporaries, no stale error log ----

def test_a_folder_of_someone_elses_files_is_refused_untouched(tmp_path, capsys, probe_command):
    out = tmp_path / "shards"
    out.mkdir()
    theirs = {f"{i:05d}.tar": f"shard {i}".encode() for i in range(20)} | {"stats.json": b"{}", "DATASET.md": b"#"}
    for name, data in theirs.items():
        (out / name).write_bytes(data)
    stage = probe(out)
    with pytest.raises(errors.UsageError, match=r"holds files that wit did not write \('00000.tar', '00001.tar', "
                                                r"'00002.tar' and 19 more\) and no run marker .*--overwrite"):
        run_stage(stage, BEAM_IN_PROCESS)
    assert stage.calls == []  # refused before any other check
    wit_probe = probe_command(lambda options, beam_argv: run_stage(ProbeStage(options), beam_argv))
    assert wit_probe("--out", str(out), *BEAM_IN_PROCESS) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == theirs  # nothing touched, nothing added
    assert wit_probe("--out", str(out), "--overwrite", *BEAM_IN_PROCESS) == 0  # taken over when asked
    assert json.loads((out / run_folder.MARKER).read_text())["command"] == "probe"
    assert wit_probe("--out", str(out), *BEAM_IN_PROCESS) == 0  # now it is ours: a rerun needs no flag


def test_another_commands_folder_is_refused(tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    fileio.write_marker(str(out), "download")
    (out / "00000.tar").write_bytes(b"raw shard")
    with pytest.raises(errors.UsageError, match=r"is the output folder of 'wit download'.*'wit probe' would "
                                                r"overwrite or delete its files"):
        run_stage(probe(out), BEAM_IN_PROCESS)
    assert (out / "00000.tar").read_bytes() == b"raw shard"


def test_a_folder_with_only_our_bookkeeping_is_fresh(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / ".wit-demo-started.json").write_text("{}")  # the demo's step file, written before the stage runs
    assert run_stage(probe(out), BEAM_IN_PROCESS) == 0
    assert (out / run_folder.MARKER).exists() and not (out / run_folder.LOCK).exists()  # lock released


def test_a_second_writer_is_refused_while_the_first_runs(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    fileio.write_marker(str(out), "probe")
    with run_folder.FolderLock(str(out), "probe"):
        stage = probe(out)
        with pytest.raises(errors.UsageError, match=rf"--out {re.escape(str(out))} is being written by another "
                                                    rf"run \(command probe, pid \d+"):
            run_stage(stage, BEAM_IN_PROCESS)
        assert "build" not in stage.calls and "clean_rerun" not in stage.calls
    assert run_stage(probe(out), BEAM_IN_PROCESS) == 0


def test_a_killed_runs_temporaries_and_error_log_go_and_only_they(tmp_path, capsys):
    out = tmp_path / "o"
    assert run_stage(probe(out), BEAM_IN_PROCESS) == 0
    killed = [out / f"pairs-00000-of-00001.parquet.tmp-{'ab' * 16}", out / "sub" / f"x.json.tmp-{'cd' * 16}"]
    (out / "sub").mkdir()
    kept = [out / "pairs.tmp-notes", out / "sub" / "keep.parquet"]
    for path in killed + kept:
        path.write_bytes(b"partial")
    (out / launcher.BEAM_ERRORS_LOG).write_text("an earlier failure\n")
    capsys.readouterr()
    assert run_stage(probe(out), BEAM_IN_PROCESS) == 0
    assert not any(p.exists() for p in killed) and all(p.exists() for p in kept)
    assert not (out / launcher.BEAM_ERRORS_LOG).exists()  # a successful rerun leaves no stale error log
    assert "removed 2 temporary file(s) an interrupted run left" in capsys.readouterr().out


def test_a_failed_run_removes_its_temporaries_and_releases_the_lock(tmp_path, monkeypatch):
    """A failed run leaves no temporary, no lock, and no stats.json of an earlier run: it must not look finished."""
    out = tmp_path / "o"
    assert run_stage(probe(out), BEAM_IN_PROCESS) == 0
    (out / "stats.json").write_text("{}")  # an earlier run's completion file
    stage = probe(out, numbers=[13])
    build = stage.build

    def build_and_leave_a_temporary(pipeline: beam.Pipeline) -> None:
        (out / f"half.parquet.tmp-{'ef' * 16}").write_bytes(b"half")
        build(pipeline)

    monkeypatch.setattr(stage, "build", build_and_leave_a_temporary)
    with pytest.raises(errors.StageFailed):
        run_stage(stage, BEAM_IN_PROCESS)
    assert sorted(p.name for p in out.iterdir()) == [run_folder.MARKER, launcher.BEAM_ERRORS_LOG]


@pytest.mark.parametrize("full_at", [run_folder.MARKER, COUNTS_FILE])
def test_a_full_disk_is_one_line_naming_the_path(full_at, tmp_path, capsys, probe_command, full_disk):
    """ENOSPC while a stage writes (inside the pipeline or in finish) is DiskFull naming the file: one line, exit 1,
    no temporary left behind."""
    full_disk(lambda path: f"/{full_at}.tmp-" in path)
    out = tmp_path / "o"
    wit_probe = probe_command(lambda options, beam_argv: run_stage(ProbeStage(options), beam_argv))
    assert wit_probe("--out", str(out), *BEAM_IN_PROCESS) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"wit probe: error: no space left on the device while writing {out / full_at}")
    assert not [p.name for p in out.iterdir() if run_folder.is_temporary(p.name)]  # no temporary left
