"""``wit train --resume`` from every checkpoint position people hit (mid-epoch, the last step of an epoch, the last
step of the run, with and without sizes.json), extending a run, the learning rate logged per step, the data plan
checked on resume, and Ctrl-C / SIGTERM: checkpoint, one line, exit 130 / 143."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import trainer.train as train_module
from tests.trainer.conftest import CLASSES, write_shards
from trainer.tokenizer import Tokenizer
from trainer.train import warmup_cosine
from wit_builder.cli import main as wit

torch.set_num_threads(1)

# 4 shards x 64 = 256 samples; batch 16 -> an epoch is 16 steps.
COMMON = ["--model", "tiny", "--batch-size", "16", "--log-every", "1", "--workers", "2", "--shuffle-buffer", "32",
          "--seed", "3", "--lr", "1e-3", "--warmup", "4"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_shards(out, per_class=32, samples_per_shard=64, image_px=32)
    return out


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    Tokenizer.train([c for _, templates in CLASSES.values() for c in templates] * 20, 400, 32).save(path)
    return path


def _metrics(out: Path, name: str = "metrics.jsonl") -> list[dict]:
    return [json.loads(line) for line in (out / name).read_text().splitlines()]


def _train(shards: Path, out: Path, tokenizer_file: Path, *extra: str) -> int:
    return wit(["train", "--shards", str(shards), "--out", str(out), "--tokenizer", str(tokenizer_file), *COMMON,
                *extra])


def _untimed(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("samples_per_s", "data_wait")}


def _whole_run_keeping_every_checkpoint(shards, out, tokenizer_file, monkeypatch, steps: int) -> dict[int, Path]:
    """An uninterrupted run that writes a checkpoint after every step and keeps a copy of each."""
    copies: dict[int, Path] = {}
    original = train_module._checkpoint

    def keep(path, *args, **kwargs):
        original(path, *args, **kwargs)
        step = torch.load(path, weights_only=False)["step"]
        copies[step] = path.with_name(f"step{step}.pt")
        shutil.copy(path, copies[step])

    monkeypatch.setattr(train_module, "_checkpoint", keep)
    assert _train(shards, out, tokenizer_file, "--steps", str(steps), "--checkpoint-every", "1") == 0
    monkeypatch.setattr(train_module, "_checkpoint", original)
    return copies


def _resume_from(copy: Path, whole: Path, out: Path) -> None:
    """A run directory as a run killed right after that checkpoint leaves it (its logs ran ahead of it)."""
    out.mkdir()
    shutil.copy(copy, out / "checkpoint.pt")
    for name in ("metrics.jsonl", "epochs.jsonl"):
        shutil.copy(whole / name, out / name)


@pytest.mark.parametrize("sizes_json", [True, False], ids=["sizes.json", "no-sizes.json"])
def test_resume_from_every_checkpoint_position(shards, tokenizer_file, tmp_path, monkeypatch, sizes_json):
    if not sizes_json:  # no epoch size: an epoch ends when its streams run dry, not at a step count
        bare = tmp_path / "bare"
        shutil.copytree(shards, bare)
        (bare / "sizes.json").unlink()
        shards = bare
    whole = tmp_path / "whole"
    copies = _whole_run_keeping_every_checkpoint(shards, whole, tokenizer_file, monkeypatch, steps=20)
    reference = _metrics(whole)
    assert [r["epoch"] for r in reference] == [0] * 16 + [1] * 4
    epochs = _metrics(whole, "epochs.jsonl")
    assert [(e["epoch"], e["samples_trained"]) for e in epochs] == [(0, 256)]
    # mid-epoch, the last step of epoch 0 (the reported failure), the first of epoch 1, the last of the run
    for step in (5, 16, 17, 20):
        out = tmp_path / f"from{step}"
        _resume_from(copies[step], whole, out)
        assert _train(shards, out, tokenizer_file, "--steps", "20", "--checkpoint-every", "100", "--resume") == 0
        # bit for bit: steps, epochs, losses, learning rates and drop counts; only the timings differ
        assert [_untimed(r) for r in _metrics(out)] == [_untimed(r) for r in reference], step
        # epochs.jsonl reads as one run: epoch 0 once, whichever side of its end the checkpoint fell
        assert [e["epoch"] for e in _metrics(out, "epochs.jsonl")] == [0], step
        assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 20


def test_extending_a_run_recomputes_the_schedule(shards, tokenizer_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(shards, out, tokenizer_file, "--steps", "10") == 0
    first = _metrics(out)
    # The lr logged is the one each step ran at: warm-up 1/4, 2/4, ... of 1e-3, cosine over 10 steps.
    expected = [1e-3 * warmup_cosine(4, 10)(i) for i in range(10)]
    assert [r["lr"] for r in first] == pytest.approx(expected, rel=1e-6)
    assert first[0]["lr"] == pytest.approx(2.5e-4) and first[-1]["lr"] > 0
    capsys.readouterr()
    assert _train(shards, out, tokenizer_file, "--steps", "16", "--resume") == 0
    printed = capsys.readouterr().out
    assert "--steps 10 -> 16: learning-rate schedule recomputed over 16 steps from step 10" in printed
    extended = _metrics(out)
    assert [r["step"] for r in extended] == list(range(1, 17))
    assert extended[:10] == first  # the first ten steps are the first run's
    assert [r["lr"] for r in extended[10:]] == pytest.approx([1e-3 * warmup_cosine(4, 16)(i) for i in range(10, 16)],
                                                             rel=1e-6)
    # A total below the checkpoint's step cannot continue it.
    assert _train(shards, out, tokenizer_file, "--steps", "12", "--resume") == 2
    assert "the checkpoint is at step 16, past --steps 12" in capsys.readouterr().err


def test_resume_refuses_a_changed_data_plan(shards, tokenizer_file, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(shards, data)
    out = tmp_path / "run"
    assert _train(data, out, tokenizer_file, "--steps", "3") == 0
    capsys.readouterr()
    # --samples-per-epoch changes the epoch's length, so the order of every later batch
    assert _train(data, out, tokenizer_file, "--steps", "6", "--samples-per-epoch", "128", "--resume") == 2
    assert "--samples-per-epoch: the checkpoint's plan has samples_per_epoch 256, this run 128" in \
        capsys.readouterr().err
    # a shard added beside the others (sizes.json updated, as finalize would write it)
    shutil.copy(data / "00000.tar", data / "00004.tar")
    sizes = json.loads((data / "sizes.json").read_text())
    (data / "sizes.json").write_text(json.dumps(sizes | {"00004": 64}))
    assert _train(data, out, tokenizer_file, "--steps", "6", "--resume") == 2
    err = capsys.readouterr().err
    assert "the shard list changed: 1 added (00004.tar)" in err and "start a new --out" in err
    # the model and the batch are still refused as before
    (data / "00004.tar").unlink()
    (data / "sizes.json").write_text(json.dumps(sizes))
    assert _train(data, out, tokenizer_file, "--steps", "6", "--resume", "--model", "ViT-B/32") == 2
    assert "--model is 'ViT-B/32' but the checkpoint ran with 'tiny'" in capsys.readouterr().err
    assert _train(data, out, tokenizer_file, "--steps", "6", "--resume") == 0  # unchanged: continues


def _interrupt(shards: Path, out: Path, tokenizer_file: Path, sig: int, after_lines: int) -> tuple[int, str]:
    command = [sys.executable, "-m", "wit_builder.cli", "train", "--shards", str(shards), "--out", str(out),
               "--tokenizer", str(tokenizer_file), *COMMON, "--steps", "200", "--checkpoint-every", "1000"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= after_lines:
            # As a terminal's Ctrl-C does: to the whole process group, data-loader workers included.
            os.killpg(proc.pid, sig)
            break
        time.sleep(0.01)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupt_checkpoints_then_exits_non_zero(shards, tokenizer_file, tmp_path, sig, code):
    out = tmp_path / "run"
    returncode, err = _interrupt(shards, out, tokenizer_file, sig, after_lines=3)
    assert returncode == code, err[-2000:]
    step = torch.load(out / "checkpoint.pt", weights_only=False)["step"]
    assert 3 <= step < 200 and step == _metrics(out)[-1]["step"]
    assert f"wit train: interrupted at step {step}; rerun with --resume" in err.splitlines()
    assert "Traceback" not in err


@pytest.mark.slow
def test_an_epoch_ending_early_on_one_rank_is_accounted_for(tmp_path, tokenizer_file):
    """Two ranks over shards of 64, 64, 64 and 40 samples: one rank holds 104, the other 128, so the epoch ends
    for both after 13 steps (208 of 232 samples); the 24 the longer rank never reached are reported, not 'none'."""
    shards = tmp_path / "shards"
    write_shards(shards, per_class=29, samples_per_shard=64, image_px=32)  # 232 samples
    out = tmp_path / "ddp"
    command = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", "2",
               "-m", "wit_builder.cli", "train", "--shards", str(shards), "--out", str(out), "--model", "tiny",
               "--batch-size", "16", "--steps", "14", "--log-every", "7", "--workers", "1", "--shuffle-buffer", "16",
               "--tokenizer", str(tokenizer_file)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    (epoch,) = _metrics(out, "epochs.jsonl")
    assert (epoch["samples_planned"], epoch["samples_trained"], epoch["left_out"]) == (232, 208, {"not_reached": 24})
    assert "epoch 0: trained 208 of 232 samples in 13 steps; left out 24 (not_reached 24)" in done.stdout


def test_a_run_ending_on_an_epochs_last_step_records_that_epoch(shards, tokenizer_file, tmp_path, capsys):
    # --steps 16 is exactly epoch 0: the run prints it as finished, so epochs.jsonl must hold it too (it used to
    # stay empty until a later --resume drew the next batch).
    out = tmp_path / "run"
    assert _train(shards, out, tokenizer_file, "--steps", "16") == 0
    assert "wit train: epoch 0: trained 256 of 256 samples in 16 steps; left out none" in capsys.readouterr().out
    epochs = _metrics(out, "epochs.jsonl")
    assert [(e["step"], e["epoch"], e["complete"], e["samples_trained"]) for e in epochs] == [(16, 0, True, 256)]
    # Rerun as it is, then extended: still epoch 0 once, and the summary counts it once.
    assert _train(shards, out, tokenizer_file, "--steps", "16", "--resume") == 0
    assert "samples left out none" in capsys.readouterr().out
    assert [e["epoch"] for e in _metrics(out, "epochs.jsonl")] == [0]
    assert _train(shards, out, tokenizer_file, "--steps", "18", "--resume") == 0
    assert [(e["step"], e["epoch"]) for e in _metrics(out, "epochs.jsonl")] == [(16, 0)]
