"""The one contract of every ``wit`` command (wit_builder.cli): generated options, strict parsing, exit codes,
error messages, Ctrl-C, and the Makefile's front. (The option generator itself: tests/core/test_options.py; our
errors: tests/core/test_errors.py; the launcher and counting frame: tests/beam/; stats.json's layout:
tests/schemas/test_stats.py.)"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from schemas import stats as stats_schema
from tests import hostile_server as hs
from tests.conftest import BEAM_IN_PROCESS, run_failing_pipeline
from wit_builder import cli
from wit_builder.core import options as opts
from wit_builder.queries.wikidump import DumpError

# Each command's required flags with harmless values, so that parsing reaches the strict check.
REQUIRED = {
    "build-queries": ["--dump", "d.xml", "--out", "o"],
    "build-pairs": ["--queries", "q", "--pool", "p.parquet", "--out", "o"],
    "download": ["--pairs", "p.parquet", "--out", "o"],
    "finalize": ["--raw", "r", "--out", "o"],
    "train": ["--shards", "s", "--out", "o"],
    "eval": ["--checkpoint", "c", "--zeroshot", "z"],
    "export": ["--checkpoint", "c", "--out", "o.pt"],
    "demo": ["--out", "o"],
}
# A user's typo in each command, and the option it should suggest.
TYPOS = {
    "build-queries": ("--max-querys", "--max-queries"),
    "build-pairs": ("--per-query-cpa", "--per-query-cap"),
    "download": ("--alow-private-networks", "--allow-private-networks"),
    "finalize": ("--phash-distanse", "--phash-distance"),
    "train": ("--batch-sise", "--batch-size"),
    "eval": ("--fewshotk", "--fewshot-k"),
    "export": ("--model_name", "--model-name"),
    "demo": ("--per_query_cap", "--per-query-cap"),
}


def options_class(name: str) -> type:
    return importlib.import_module(cli.COMMANDS[name][0]).OPTIONS


def test_every_command_is_covered():
    assert set(REQUIRED) == set(TYPOS) == set(cli.COMMANDS)


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_a_misspelled_option_fails_with_a_suggestion(name, capsys):
    typo, meant = TYPOS[name]
    assert cli.main([name, *REQUIRED[name], typo, "3"]) == 2
    err = capsys.readouterr().err
    assert f"unknown option {typo}" in err and f"did you mean {meant}?" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_help_defaults_are_the_dataclass_defaults(name, capsys):
    cls = options_class(name)
    parser = cli.build_parser(name, importlib.import_module(cli.COMMANDS[name][0]))
    args, rest = parser.parse_known_args(REQUIRED[name])
    assert rest == []
    parsed = opts.from_namespace(cls, args)
    given = {f.name: getattr(parsed, f.name) for f in dataclasses.fields(cls) if opts.flag_name(f) in REQUIRED[name]}
    assert parsed == cls(**given)  # nothing the parser adds differs from the dataclass's own defaults
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag, default in opts.defaults(cls).items():
        assert flag in text
        if isinstance(default, bool):
            continue
        shown = ("none" if default is None or default == () else " ".join(map(str, default))
                 if isinstance(default, tuple) else str(default))  # a tuple as the help shows it: "a b c"
        assert f"(default: {shown}" in text, (flag, shown)


def test_help_shows_units():
    parser = cli.build_parser("download", importlib.import_module("wit_builder.download.command"))
    text = " ".join(parser.format_help().split())
    assert "(default: 30.0 s)" in text and "(default: 256 px)" in text and "(default: 10000 rows)" in text


@pytest.mark.parametrize("name", ["build-queries", "build-pairs", "download", "finalize", "demo"])
def test_beam_options_pass_through_beam_commands(name):
    leftover = ["--runner=FnApiRunner", "--direct_running_mode", "multi_processing", "--direct_num_workers=2",
                "--setup_file=./pyproject.toml"]
    assert cli.unknown_arguments(leftover, takes_beam=True) == (leftover, [])
    beam_argv, unknown = cli.unknown_arguments([*leftover, "--runer=FnApiRunner"], takes_beam=True)
    assert unknown == ["--runer=FnApiRunner"]
    assert cli.suggestion("--runer", cli.beam_flags()) == "--runner"


def test_no_suggestion_for_an_option_like_none_of_them():
    """The shared "--" alone made short flags look close: --bogus-opt was answered "did you mean --out?"."""
    assert cli.suggestion("--bogus-opt", ["--out", "--raw", "--seed"]) is None
    assert cli.suggestion("--sed", ["--out", "--raw", "--seed"]) == "--seed"
    assert cli.suggestion("--per_query_cap", ["--per-query-cap", "--out"]) == "--per-query-cap"


@pytest.mark.parametrize("name", ["train", "eval", "export"])
def test_commands_without_beam_reject_beam_options(name, capsys):
    assert cli.main([name, *REQUIRED[name], "--runner=FnApiRunner"]) == 2
    assert "--runner is a Beam pipeline option" in capsys.readouterr().err


def test_stray_values_and_unknown_commands_are_usage_errors(capsys):
    assert cli.main(["build-pairs", *REQUIRED["build-pairs"], "extra"]) == 2
    assert "unexpected argument 'extra'" in capsys.readouterr().err
    assert cli.main(["buid-pairs"]) == 2
    assert "did you mean 'build-pairs'?" in capsys.readouterr().err
    assert cli.main([]) == 2


def test_invalid_values_are_usage_errors_from_the_dataclass(capsys):
    assert cli.main(["build-pairs", *REQUIRED["build-pairs"], "--rows-per-file", "0"]) == 2
    assert "--rows-per-file must be at least 1" in capsys.readouterr().err
    assert cli.main(["train", *REQUIRED["train"], "--batch-size", "0"]) == 2
    assert "--batch-size must be positive" in capsys.readouterr().err
    assert cli.main(["eval", "--checkpoint", "c"]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err


def test_repeated_inputs_are_all_kept():
    parser = cli.build_parser("download", importlib.import_module("wit_builder.download.command"))
    args = parser.parse_args(["--pairs", "a/*.parquet", "--pairs", "b/*.parquet", "--out", "o"])
    assert opts.from_namespace(options_class("download"), args).pairs == ("a/*.parquet", "b/*.parquet")
    parser = cli.build_parser("eval", importlib.import_module("trainer.eval.command"))
    args = parser.parse_args(["--checkpoint", "c", "--retrieval", "a", "b", "--retrieval", "c"])
    assert opts.from_namespace(options_class("eval"), args).retrieval == ("a", "b", "c")


def test_aliases_and_negated_flags():
    parser = cli.build_parser("train", importlib.import_module("trainer.train"))
    for flag in ("--wd", "--weight-decay"):
        args = parser.parse_args([*REQUIRED["train"], flag, "0.1"])
        assert opts.from_namespace(options_class("train"), args).weight_decay == 0.1
    parser = cli.build_parser("download", importlib.import_module("wit_builder.download.command"))
    parsed = opts.from_namespace(options_class("download"), parser.parse_args([*REQUIRED["download"], "--no-robots"]))
    assert parsed.network.respect_robots_txt is False and parsed.network.respect_x_robots_tag is True


# ---- exit codes and messages, through a command module whose run() does what each case needs ----

def test_exit_codes(probe_command, capsys, tmp_path):
    assert probe_command(lambda o, b: 0)() == 0
    malformed = DumpError("dump.xml: malformed XML at line 7, after page id 4")
    assert probe_command(lambda o, b: run_failing_pipeline(malformed, str(tmp_path), b))(*BEAM_IN_PROCESS) == 1
    err = capsys.readouterr().err
    assert "wit probe: error: dump.xml: malformed XML at line 7, after page id 4" in err
    assert "Traceback" not in err and "while running" not in err

    def bad_input(o, b):
        raise FileNotFoundError("--pool 'x*' matches no file")
    assert probe_command(bad_input)() == 2
    assert capsys.readouterr().err.strip() == "wit probe: error: --pool 'x*' matches no file"

    def interrupted(o, b):
        raise KeyboardInterrupt
    assert probe_command(interrupted)() == 130
    assert capsys.readouterr().err.strip() == "wit probe: interrupted; rerun the same command to resume"

    def bug(o, b):
        raise ZeroDivisionError("a bug")
    with pytest.raises(ZeroDivisionError):  # not one of ours: the traceback is kept
        probe_command(bug)()


# ---- Ctrl-C on a running stage ----

@pytest.mark.slow
def test_ctrl_c_on_a_running_stage_prints_one_line_and_the_rerun_completes(tmp_path):
    from tests.download.conftest import FAST_FLAGS, write_pairs

    with hs.HostileServer() as server:
        def slow_image(h):
            time.sleep(0.2)
            hs.send(h, hs.Response(200, hs.jpeg("coffee"), content_type="image/jpeg"))

        rows = []
        for i in range(24):
            server.routes[f"/img{i}.jpg"] = slow_image
            rows.append({"uid": f"u{i:02d}", "url": server.url(f"/img{i}.jpg"), "caption": "coffee", "queries": ["q"]})
        pairs = write_pairs(tmp_path / "pairs.parquet", rows)
        out = tmp_path / "raw"
        command = [sys.executable, "-m", "wit_builder.cli", "download", "--pairs", str(pairs), "--out", str(out),
                   *FAST_FLAGS, "--threads", "1", "--rows-per-shard", "4", *BEAM_IN_PROCESS]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not list(out.glob("*_stats.json")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert err.strip().splitlines()[-1] == "wit download: interrupted; rerun the same command to resume"
        assert "Traceback" not in err and "KeyboardInterrupt" not in err
        assert len(list(out.glob("*_stats.json"))) < 6
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    stats = json.loads((out / stats_schema.STATS_JSON).read_text())
    stats_schema.validate(stats)
    assert stats["counts"]["rows"] == 24 == sum(stats_schema.prefixed(stats["counts"], "status_").values())
    rows = [r for p in sorted(out.glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert sorted(r["uid"] for r in rows) == [f"u{i:02d}" for i in range(24)]  # every row once, none lost
    interrupted = [r for r in rows if r["status"] != "success"]
    assert all("nterrupt" not in (r["error_message"] or "") for r in interrupted), interrupted


# ---- the Makefile passes what the user typed, quoted, every input as its own flag ----

def make_dry_run(*args: str) -> str:
    import shutil

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(["make", "-n", "-o", ".venv/.installed", *args], cwd=root, capture_output=True,
                          text=True, check=True)
    return done.stdout


def test_makefile_quotes_patterns_and_passes_every_input():
    out = make_dry_run("download", "PAIRS=a/*.parquet b/*.parquet")
    assert "--pairs 'a/*.parquet' --pairs 'b/*.parquet' --out 'out/raw'" in out
    out = make_dry_run("build-pairs", "POOL=c/*.wat.gz d/*.parquet", "OUT=o")
    assert "--pool 'c/*.wat.gz' --pool 'd/*.parquet' --out 'o'" in out
    assert "--raw 'r/' --raw 's/*.parquet'" in make_dry_run("finalize", "RAW=r/ s/*.parquet")
    assert "--retrieval 'x' --retrieval 'y'" in make_dry_run("eval", "ZEROSHOT=z", "RETRIEVAL=x y")


def test_makefile_out_means_the_targets_output_everywhere():
    assert "--out 'mine'" in make_dry_run("train", "OUT=mine")
    assert "--out 'alias'" in make_dry_run("train", "TRAIN_OUT=alias")  # the older name still works
    out = make_dry_run("eval", "ZEROSHOT=z", "CHECKPOINT=ck")
    assert "--checkpoint 'ck'" in out and "--out 'ck/eval.json'" in out
    assert "kept as" in out  # an existing results file is renamed and reported, never silently replaced
    assert "--checkpoint 'ck' --out 'w.pt'" in make_dry_run("export", "CHECKPOINT=ck", "OUT=w.pt")


def test_make_eval_keeps_the_previous_results(tmp_path):
    make_dry_run("eval", "ZEROSHOT=z")  # skips without make
    root = Path(__file__).resolve().parents[1]
    previous = tmp_path / "eval.json"
    previous.write_text('{"acc1": 0.5}\n')
    done = subprocess.run(["make", "-s", "-o", ".venv/.installed", "eval", "ZEROSHOT=z", f"CHECKPOINT={tmp_path}",
                           "WIT=true"], cwd=root, capture_output=True, text=True, check=True)
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("eval-") and p.suffix == ".json"]
    assert len(kept) == 1 and kept[0].read_text() == '{"acc1": 0.5}\n'
    assert f"previous results are kept as {kept[0]}" in done.stdout


@pytest.mark.parametrize("name", ["download", "finalize"])
def test_a_misspelled_required_option_is_named_with_a_suggestion(name, capsys):
    """A typo in a required flag: the user hears about the typo, not only that the flag is missing."""
    required = REQUIRED[name]
    typo = required[0] + required[0][-1]  # --pairs -> --pairss, --raw -> --raww
    assert cli.main([name, typo, *required[1:]]) == 2
    err = capsys.readouterr().err
    assert f"unknown option {typo}" in err and f"did you mean {required[0]}?" in err, err


@pytest.mark.parametrize("value", ["nan", "inf", "NaN", "1e999"])
def test_non_finite_numbers_are_usage_errors(value, capsys):
    """nan slips past every `x <= 0` check (a NaN --deadline would bound nothing): refused when parsed."""
    with pytest.raises(SystemExit) as exited:  # argparse's own usage error, as for a bad --resize-mode
        cli.main(["download", *REQUIRED["download"], "--deadline", value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--deadline" in err and "finite" in err and "Traceback" not in err, err


@pytest.mark.parametrize("name", ["build-queries", "build-pairs", "download", "finalize", "train"])
@pytest.mark.parametrize("below", [False, True])
def test_an_out_folder_that_is_a_file_is_bad_input(name, below, tmp_path, capsys):
    """--out naming a file (or a path below one) is refused before any work, in one line (os.makedirs failed
    mid-pipeline with a traceback and exit 1 in build-pairs, download, finalize and train)."""
    existing = tmp_path / "stats.json"
    existing.write_text("{}")
    out = existing / "sub" if below else existing
    argv = [str(out) if a == "o" else a for a in REQUIRED[name]]
    assert cli.main([name, *argv, *(BEAM_IN_PROCESS if name != "train" else [])]) == 2
    err = capsys.readouterr().err
    assert f"--out '{out}'" in err and "not a folder" in err and "Traceback" not in err, err
    assert existing.read_text() == "{}"


def test_a_folder_where_files_are_expected_is_bad_input(tmp_path, capsys):
    """`--dump FOLDER` failed inside the pipeline with IsADirectoryError (a traceback, exit 1); a folder that a
    pattern matches is no input file: one line naming the flag, exit 2. (A glob's subfolders are left out:
    tests/beam/test_fileio.py.)"""
    (tmp_path / "sub").mkdir()
    assert cli.main(["build-queries", "--dump", str(tmp_path), "--out", str(tmp_path / "o"), *BEAM_IN_PROCESS]) == 2
    err = capsys.readouterr().err
    assert f"--dump '{tmp_path}' is a folder, not a file" in err and "Traceback" not in err, err


@pytest.mark.parametrize(("name", "extra", "said"), [
    ("download", ["--rows-per-shard", "0"], "--rows-per-shard must be >= 1, got 0"),
    ("download", ["--per-host-rate", "-1"], "--per-host-rate must be >= 0"),
    ("download", ["--timeout", "-1"], "--timeout must be > 0"),
    ("download", ["--backoff-max", "-1"], "--backoff-max must be >= 0"),
    ("download", ["--threads", "0"], "--threads must be >= 1"),
    ("build-queries", ["--max-queries", "-5"], "--max-queries must be >= 0"),
])
def test_a_setting_out_of_range_is_named_by_its_flag(name, extra, said, capsys):
    """Range errors come from the dataclasses' validation; the user reads the flag, not the field name."""
    assert cli.main([name, *REQUIRED[name], *extra]) == 2
    err = capsys.readouterr().err
    assert said in err and "_" not in err.split("error:", 1)[1].split(",")[0], err


def test_a_beam_command_prints_no_third_party_warning_and_logs_progress_to_a_file(tmp_path):
    """Importing Beam logged "apitools not found ..." through the root logger as the first line of every Beam
    command (even --help), and so configured logging before the cli could: progress lines never reached a log
    file. In a fresh process: --help prints only the help; a run logged to a file holds our INFO progress line."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    shown = subprocess.run([sys.executable, "-m", "wit_builder.cli", "build-pairs", "--help"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0 and shown.stderr == "" and shown.stdout.startswith("usage: wit build-pairs")
    from tests.pairs.conftest import write_queries

    queries = write_queries(tmp_path / "q", ["cat"])
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"url": f"http://e.com/{i}.jpg", "caption": f"a cat {i}"}) + "\n"
                            for i in range(20)))
    log = tmp_path / "run.log"
    with open(log, "w") as stderr:
        done = subprocess.run([sys.executable, "-m", "wit_builder.cli", "build-pairs", "--queries", str(queries),
                               "--pool", str(pool), "--out", str(tmp_path / "out"), *BEAM_IN_PROCESS], env=env,
                              stdout=subprocess.DEVNULL, stderr=stderr, timeout=600)
    assert done.returncode == 0
    text = log.read_text()
    assert "wit.progress INFO build-pairs: 20 records" in text, text
    assert "apitools" not in text
