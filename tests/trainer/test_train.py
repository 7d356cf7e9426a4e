"""``wit train`` end to end on small real-photo shards (trainer.train): the loss falls, the outputs exist and load,
a run killed midway and resumed reproduces the uninterrupted run's losses exactly, and bad requests fail clearly;
gradient accumulation (one process and two DDP ranks) gives the whole batch's gradient. ``--resume`` from every
checkpoint position people hit (mid-epoch, the last step of an epoch, the last step of the run, with and without
sizes.json), extending a run, the learning rate logged per step, the data plan checked on resume, and Ctrl-C /
SIGTERM: checkpoint, one line, exit 130 / 143."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import trainer.train as train_module
from tests.trainer.conftest import CLASSES, write_class_folders, write_shards
from trainer.checkpoint import load_model
from trainer.config import MODEL_CONFIGS
from trainer.loss import make_loss
from trainer.model import CLIP
from trainer.tokenizer import Tokenizer
from trainer.train import train_step, warmup_cosine
from trainer.transforms import eval_transform
from wit_builder.cli import main as wit

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_shards(out, per_class=32, samples_per_shard=64, image_px=48)  # 8 classes, 256 samples, 4 shards
    return out


def _metrics(out: Path, name: str = "metrics.jsonl") -> list[dict]:
    return [json.loads(line) for line in (out / name).read_text().splitlines()]


def _train(shards: Path, out: Path, *extra: str) -> int:
    return wit(["train", "--shards", str(shards), "--out", str(out), "--model", "tiny", *extra])


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    Tokenizer.train([c for _, templates in CLASSES.values() for c in templates] * 20, 400, 32).save(path)
    return path


@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    assert _train(shards, out, "--batch-size", "32", "--steps", "200", "--lr", "1e-3", "--warmup", "20",
                  "--log-every", "10", "--checkpoint-every", "100", "--workers", "1", "--shuffle-buffer", "128",
                  "--vocab-size", "400") == 0
    return out


def test_tiny_model_learns_from_real_photos(trained, tmp_path):
    records = _metrics(trained)
    assert [r["step"] for r in records] == list(range(10, 201, 10))
    assert all({"step", "loss", "lr", "samples_per_s", "data_wait"} <= set(r) for r in records)
    first, last = records[0]["loss"], sum(r["loss"] for r in records[-3:]) / 3
    assert first > 2.5  # near ln(32) = 3.47 at the start
    # Falls towards ln(4) = 1.39: a batch of 32 over 8 classes holds ~4 interchangeable captions per image.
    assert last < first - 1.0 and last < 2.0
    for name in ("checkpoint.pt", "tokenizer.json", "loss.png"):
        assert (trained / name).stat().st_size > 0, name

    # The trained model tells held-out photos of the classes apart (chance is 1/8).
    model, tokenizer = load_model(trained / "checkpoint.pt")
    folders = tmp_path / "heldout"
    names = write_class_folders(folders, per_class=6, image_px=48)
    prompts = [CLASSES[n][1][0] for n in names]
    preprocess = eval_transform(model.config.image_size)
    from PIL import Image

    with torch.no_grad():
        text = F.normalize(model.encode_text(tokenizer(prompts)), dim=-1)
        correct = total = 0
        for label, name in enumerate(names):
            images = torch.stack([preprocess(Image.open(p)) for p in sorted((folders / name).glob("*.jpg"))])
            predicted = (F.normalize(model.encode_image(images), dim=-1) @ text.t()).argmax(dim=-1)
            correct += int((predicted == label).sum())
            total += len(images)
    assert correct / total > 0.5


def _signal_when_logged(shards: Path, out: Path, args: list[str], lines: int, sig: int,
                        group: bool = False) -> tuple[int, str]:
    """Start `wit train` in a subprocess, send ``sig`` once metrics.jsonl has ``lines`` lines (with ``group``, to
    its whole process group, data-loader workers included, as a terminal's Ctrl-C does); its exit code and
    stderr. Stderr goes to a file, not a pipe: a worker outliving a killed process cannot hold the wait open."""
    command = [sys.executable, "-m", "wit_builder.cli", "train", "--shards", str(shards), "--out", str(out), *args]
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr,
                                env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=group)
        metrics = out / "metrics.jsonl"
        deadline = time.monotonic() + 180
        while proc.poll() is None and time.monotonic() < deadline:
            if metrics.exists() and len(metrics.read_text().splitlines()) >= lines:
                if group:
                    os.killpg(proc.pid, sig)
                else:
                    proc.send_signal(sig)
                break
            time.sleep(0.01)
        try:
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        stderr.seek(0)
        return proc.returncode, stderr.read()


def test_killed_or_stopped_run_resumes_exactly(shards, tokenizer_file, tmp_path):
    common = ["--batch-size", "16", "--steps", "40", "--log-every", "1", "--checkpoint-every", "5", "--workers", "2",
              "--shuffle-buffer", "32", "--seed", "5", "--tokenizer", str(tokenizer_file)]
    assert _train(shards, tmp_path / "whole", *common) == 0
    whole = _metrics(tmp_path / "whole")
    assert {r["epoch"] for r in whole} == {0, 1, 2}  # an epoch is 16 steps: resumes cross epoch boundaries

    # SIGKILL after step 7 or later: nothing but the periodic checkpoints survive.
    killed = tmp_path / "killed"
    code, err = _signal_when_logged(shards, killed, ["--model", "tiny", *common], lines=7, sig=signal.SIGKILL)
    assert code == -signal.SIGKILL, err[-2000:]
    checkpoint_step = torch.load(killed / "checkpoint.pt", weights_only=False)["step"]
    assert checkpoint_step % 5 == 0 and 5 <= checkpoint_step < 40
    assert _train(shards, killed, *common, "--resume") == 0
    assert [r["loss"] for r in _metrics(killed)] == [r["loss"] for r in whole]  # bit for bit, steps 1..40

    # SIGTERM: the run finishes its step, checkpoints there (not on a multiple of 5) and exits with 143 (128 + 15).
    stopped = tmp_path / "stopped"
    code, err = _signal_when_logged(shards, stopped, ["--model", "tiny", *common], lines=3, sig=signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, err[-2000:]
    state = torch.load(stopped / "checkpoint.pt", weights_only=False)
    assert state["step"] == _metrics(stopped)[-1]["step"] < 40
    assert _train(shards, stopped, *common, "--resume") == 0
    assert [r["loss"] for r in _metrics(stopped)] == [r["loss"] for r in whole]


def test_training_options_run(shards, tmp_path):
    # accumulation, bf16 autocast, gradient checkpointing and the SigLIP loss together
    assert _train(shards, tmp_path, "--batch-size", "16", "--steps", "3", "--log-every", "1", "--workers", "0",
                  "--accum-steps", "2", "--precision", "bf16", "--grad-checkpointing", "--loss", "siglip",
                  "--vocab-size", "300") == 0
    losses = [r["loss"] for r in _metrics(tmp_path)]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)


def test_bad_requests_fail_with_a_clear_message(shards, tokenizer_file, tmp_path, capsys):
    assert _train(tmp_path / "nowhere", tmp_path / "a", "--steps", "2") == 2
    assert "does not exist" in capsys.readouterr().err
    assert _train(shards, tmp_path / "b", "--steps", "2", "--samples-per-epoch", "1000") == 2
    assert "asked for 1000 samples per epoch but the 4 shards hold 256" in capsys.readouterr().err
    assert _train(shards, tmp_path / "c", "--steps", "2", "--accum-steps", "3") == 2
    assert "--accum-steps 3 must divide" in capsys.readouterr().err
    run = tmp_path / "run"
    args = ["--steps", "2", "--workers", "0", "--tokenizer", str(tokenizer_file)]
    assert _train(shards, run, "--batch-size", "32", *args) == 0
    assert _train(shards, run, "--batch-size", "32", *args) == 2  # would overwrite the run's checkpoint
    assert "checkpoint.pt already exists; pass --resume" in capsys.readouterr().err
    assert _train(shards, run, "--batch-size", "64", *args, "--resume") == 2
    assert "--batch-size is 64 but the checkpoint ran with 32" in capsys.readouterr().err


def test_two_ranks_under_torchrun(shards, tmp_path, capsys):
    out = tmp_path / "ddp"
    command = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", "2",
               "-m", "wit_builder.cli", "train", "--shards", str(shards), "--out", str(out), "--model", "tiny",
               "--batch-size", "16", "--steps", "6", "--log-every", "2", "--checkpoint-every", "3", "--workers", "1",
               "--shuffle-buffer", "16", "--vocab-size", "300"]  # rank 0 learns the BPE and sends it
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "6 steps of 16 on 2 rank(s)" in done.stdout
    # The epoch's accounting is summed over ranks: each rank read 48 of its 128 samples.
    assert "epoch 0 (in progress): trained 96 of 256 samples in 6 steps; left out 160 (not_reached 160)" in done.stdout
    assert [r["step"] for r in _metrics(out)] == [2, 4, 6] and (out / "tokenizer.json").exists()
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["world_size"] == 2 and len(state["data_state"]) == 2
    # Each rank read its own shards: 6 steps x 8 samples per rank.
    assert [sum(s["positions"]) for s in state["data_state"]] == [48, 48]
    # The data position is per rank, so a resume on another number of ranks is refused.
    assert _train(shards, out, "--batch-size", "16", "--steps", "6", "--workers", "1", "--shuffle-buffer", "16",
                  "--resume") == 2
    assert "written by 2 rank(s), this run has 1" in capsys.readouterr().err


# ---- one optimizer step: gradient accumulation keeps the whole batch's gradient ----

def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_accumulation_gives_the_whole_batch_gradient(loss_name):
    torch.manual_seed(0)
    config = MODEL_CONFIGS["tiny"].with_vocab_size(300)
    model = CLIP(config).double()
    loss_fn = make_loss(loss_name).double()
    images = torch.randn(8, 3, 32, 32, dtype=torch.float64)
    tokens = torch.randint(1, 299, (8, 32))
    tokens[:, 10] = 299  # the end token: the highest id
    off = torch.autocast("cpu", enabled=False)
    whole = train_step(model, loss_fn, images, tokens, 1, off, ddp=False)
    g1 = {**_grads(model), **_grads(loss_fn)}  # the loss's own: SigLIP's bias, once per batch like the temperature
    model.zero_grad()
    loss_fn.zero_grad()
    train_step(model, loss_fn, images, tokens, 4, off, ddp=False)
    g4 = {**_grads(model), **_grads(loss_fn)}
    assert ("logit_bias" in g4) == (loss_name == "siglip")
    assert set(g1) == set(g4)
    for name in g1:
        torch.testing.assert_close(g4[name], g1[name], rtol=1e-8, atol=1e-10, msg=name)
    assert whole.item() > 0


def _ddp_accumulation_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    generator = torch.Generator().manual_seed(10 + rank)  # each rank its own 4 samples
    images = torch.randn(4, 3, 32, 32, dtype=torch.float64, generator=generator)
    tokens = torch.randint(1, 299, (4, 32), generator=generator)
    tokens[:, 10] = 299
    off = torch.autocast("cpu", enabled=False)
    out = {}
    for name in ("clip", "siglip"):
        torch.manual_seed(0)  # the same model on both ranks
        model = CLIP(MODEL_CONFIGS["tiny"].with_vocab_size(300)).double()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        loss_fn = make_loss(name).double()
        # This rank's own bias gradient, before any averaging (the plain module, no DDP).
        image_features, text_features, scale = model(images, tokens)
        loss_fn(image_features, text_features, scale).backward()
        local_bias = [p.grad.clone() for p in loss_fn.parameters()]
        grads = {}
        for accum in (1, 2):
            for _ in range(2):  # a second step: DDP checks that the previous one finished its reduction
                model.zero_grad()
                loss_fn.zero_grad()
                train_step(ddp, loss_fn, images, tokens, accum, off, ddp=True)
            grads[accum] = {**_grads(model), **_grads(loss_fn)}
        out[name] = {"grads": grads, "local_bias": local_bias}
    torch.save(out, os.path.join(out_dir, f"accum{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_accumulation_under_ddp_gives_the_whole_batch_gradient():
    """--accum-steps under DDP: the micro-batches before the last skip the all-reduce (no_sync); every parameter,
    the temperature included, gets its gradient in the synced last one, equal to the unsplit batch's. SigLIP's
    bias (a parameter of the loss, outside DDP) gets the mean of the ranks' gradients, the same on every rank."""
    with tempfile.TemporaryDirectory() as tmp:
        torch.multiprocessing.spawn(_ddp_accumulation_worker, args=(2, os.path.join(tmp, "init"), tmp), nprocs=2)
        ranks = [torch.load(os.path.join(tmp, f"accum{rank}.pt")) for rank in range(2)]
        for name in ("clip", "siglip"):
            for rank in range(2):
                grads = ranks[rank][name]["grads"]
                assert set(grads[1]) == set(grads[2]) and "logit_scale" in grads[2]
                for key in grads[1]:
                    torch.testing.assert_close(grads[2][key], grads[1][key], rtol=1e-8, atol=1e-10, msg=key)
        local = [ranks[rank]["siglip"]["local_bias"][0] for rank in range(2)]
        assert not torch.equal(local[0], local[1])  # the ranks' own gradients differ...
        for rank in range(2):  # ...and each rank steps with their mean
            torch.testing.assert_close(ranks[rank]["siglip"]["grads"][1]["logit_bias"], (local[0] + local[1]) / 2,
                                       rtol=1e-8, atol=1e-12)


# ---- --resume, extending a run, signals ----

# 4 shards x 64 = 256 samples; batch 16 -> an epoch is 16 steps.
COMMON = ["--model", "tiny", "--batch-size", "16", "--log-every", "1", "--workers", "2", "--shuffle-buffer", "32",
          "--seed", "3", "--lr", "1e-3", "--warmup", "4"]


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory) -> Path:
    """4 shards of 64 samples at 32 px: the resume tests' runs."""
    out = tmp_path_factory.mktemp("shards")
    write_shards(out, per_class=32, samples_per_shard=64, image_px=32)
    return out


def _train_small(shards: Path, out: Path, tokenizer_file: Path, *extra: str) -> int:
    """``wit train`` with :data:`COMMON` and the test tokenizer; the exit status."""
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
    assert _train_small(shards, out, tokenizer_file, "--steps", str(steps), "--checkpoint-every", "1") == 0
    monkeypatch.setattr(train_module, "_checkpoint", original)
    return copies


def _resume_from(copy: Path, whole: Path, out: Path) -> None:
    """A run directory as a run killed right after that checkpoint leaves it (its logs ran ahead of it)."""
    out.mkdir()
    shutil.copy(copy, out / "checkpoint.pt")
    for name in ("metrics.jsonl", "epochs.jsonl"):
        shutil.copy(whole / name, out / name)


@pytest.mark.parametrize("sizes_json", [True, False], ids=["sizes.json", "no-sizes.json"])
def test_resume_from_every_checkpoint_position(small_shards, tokenizer_file, tmp_path, monkeypatch, sizes_json):
    if not sizes_json:  # no epoch size: an epoch ends when its streams run dry, not at a step count
        bare = tmp_path / "bare"
        shutil.copytree(small_shards, bare)
        (bare / "sizes.json").unlink()
        small_shards = bare
    whole = tmp_path / "whole"
    copies = _whole_run_keeping_every_checkpoint(small_shards, whole, tokenizer_file, monkeypatch, steps=20)
    reference = _metrics(whole)
    assert [r["epoch"] for r in reference] == [0] * 16 + [1] * 4
    epochs = _metrics(whole, "epochs.jsonl")
    assert [(e["epoch"], e["samples_trained"]) for e in epochs] == [(0, 256)]
    # mid-epoch, the last step of epoch 0 (the reported failure), the first of epoch 1, the last of the run
    for step in (5, 16, 17, 20):
        out = tmp_path / f"from{step}"
        _resume_from(copies[step], whole, out)
        assert _train_small(small_shards, out, tokenizer_file, "--steps", "20", "--checkpoint-every", "100",
                            "--resume") == 0
        # bit for bit: steps, epochs, losses, learning rates and drop counts; only the timings differ
        assert [_untimed(r) for r in _metrics(out)] == [_untimed(r) for r in reference], step
        # epochs.jsonl reads as one run: epoch 0 once, whichever side of its end the checkpoint fell
        assert [e["epoch"] for e in _metrics(out, "epochs.jsonl")] == [0], step
        assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 20


def test_extending_a_run_recomputes_the_schedule(small_shards, tokenizer_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train_small(small_shards, out, tokenizer_file, "--steps", "10") == 0
    first = _metrics(out)
    # The lr logged is the one each step ran at: warm-up 1/4, 2/4, ... of 1e-3, cosine over 10 steps.
    expected = [1e-3 * warmup_cosine(4, 10)(i) for i in range(10)]
    assert [r["lr"] for r in first] == pytest.approx(expected, rel=1e-6)
    assert first[0]["lr"] == pytest.approx(2.5e-4) and first[-1]["lr"] > 0
    capsys.readouterr()
    assert _train_small(small_shards, out, tokenizer_file, "--steps", "16", "--resume") == 0
    printed = capsys.readouterr().out
    assert "--steps 10 -> 16: learning-rate schedule recomputed over 16 steps from step 10" in printed
    extended = _metrics(out)
    assert [r["step"] for r in extended] == list(range(1, 17))
    assert extended[:10] == first  # the first ten steps are the first run's
    assert [r["lr"] for r in extended[10:]] == pytest.approx([1e-3 * warmup_cosine(4, 16)(i) for i in range(10, 16)],
                                                             rel=1e-6)
    # A total below the checkpoint's step cannot continue it.
    assert _train_small(small_shards, out, tokenizer_file, "--steps", "12", "--resume") == 2
    assert "the checkpoint is at step 16, past --steps 12" in capsys.readouterr().err


def test_resume_refuses_a_changed_data_plan(small_shards, tokenizer_file, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(small_shards, data)
    out = tmp_path / "run"
    assert _train_small(data, out, tokenizer_file, "--steps", "3") == 0
    capsys.readouterr()
    # --samples-per-epoch changes the epoch's length, so the order of every later batch
    assert _train_small(data, out, tokenizer_file, "--steps", "6", "--samples-per-epoch", "128", "--resume") == 2
    assert "--samples-per-epoch: the checkpoint's plan has samples_per_epoch 256, this run 128" in \
        capsys.readouterr().err
    # a shard added beside the others (sizes.json updated, as finalize would write it)
    shutil.copy(data / "00000.tar", data / "00004.tar")
    sizes = json.loads((data / "sizes.json").read_text())
    (data / "sizes.json").write_text(json.dumps(sizes | {"00004": 64}))
    assert _train_small(data, out, tokenizer_file, "--steps", "6", "--resume") == 2
    err = capsys.readouterr().err
    assert "the shard list changed: 1 added (00004.tar)" in err and "start a new --out" in err
    # the model and the batch are still refused as before
    (data / "00004.tar").unlink()
    (data / "sizes.json").write_text(json.dumps(sizes))
    assert _train_small(data, out, tokenizer_file, "--steps", "6", "--resume", "--model", "ViT-B/32") == 2
    assert "--model is 'ViT-B/32' but the checkpoint ran with 'tiny'" in capsys.readouterr().err
    assert _train_small(data, out, tokenizer_file, "--steps", "6", "--resume") == 0  # unchanged: continues


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupt_checkpoints_then_exits_non_zero(small_shards, tokenizer_file, tmp_path, sig, code):
    out = tmp_path / "run"
    args = ["--tokenizer", str(tokenizer_file), *COMMON, "--steps", "200", "--checkpoint-every", "1000"]
    returncode, err = _signal_when_logged(small_shards, out, args, lines=3, sig=sig, group=True)
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


def test_a_run_ending_on_an_epochs_last_step_records_that_epoch(small_shards, tokenizer_file, tmp_path, capsys):
    # --steps 16 is exactly epoch 0: the run prints it as finished, so epochs.jsonl must hold it too (it used to
    # stay empty until a later --resume drew the next batch).
    out = tmp_path / "run"
    assert _train_small(small_shards, out, tokenizer_file, "--steps", "16") == 0
    assert "wit train: epoch 0: trained 256 of 256 samples in 16 steps; left out none" in capsys.readouterr().out
    epochs = _metrics(out, "epochs.jsonl")
    assert [(e["step"], e["epoch"], e["complete"], e["samples_trained"]) for e in epochs] == [(16, 0, True, 256)]
    # Rerun as it is, then extended: still epoch 0 once, and the summary counts it once.
    assert _train_small(small_shards, out, tokenizer_file, "--steps", "16", "--resume") == 0
    assert "samples left out none" in capsys.readouterr().out
    assert [e["epoch"] for e in _metrics(out, "epochs.jsonl")] == [0]
    assert _train_small(small_shards, out, tokenizer_file, "--steps", "18", "--resume") == 0
    assert [(e["step"], e["epoch"]) for e in _metrics(out, "epochs.jsonl")] == [(16, 0)]


def _strict_lines(path: Path) -> list[dict]:
    """Every line of a JSONL file parsed strictly (RFC 8259: no NaN or Infinity)."""
    def refuse(constant: str) -> None:
        raise AssertionError(f"{path} holds {constant}")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(small_shards, tokenizer_file, tmp_path, capsys):
    """A learning rate of 1e30 sends the weights to inf after the first step: the loss turns nan at step 2. The
    run stops there with exit 1 and one line, and the checkpoint of step 1 (finite weights) stays on disk."""
    out = tmp_path / "run"
    rc = _train_small(small_shards, out, tokenizer_file, "--steps", "8", "--checkpoint-every", "1",
                      "--lr", "1e30", "--warmup", "1", "--workers", "0")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err[-1].startswith("wit train: error: step 2 (epoch 0): loss nan")
    assert "checkpoint.pt keeps step 1, the last good one" in err[-1] and "--on-nonfinite skip" in err[-1]
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["step"] == 1 and all(torch.isfinite(t).all() for t in state["model"].values())
    assert [r["step"] for r in _strict_lines(out / "metrics.jsonl")] == [1]
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def test_skipping_non_finite_batches_goes_on_then_gives_up(small_shards, tokenizer_file, tmp_path, capsys,
                                                          monkeypatch):
    """--on-nonfinite skip: a batch whose loss is nan is skipped without an optimizer step (the weights do not
    move) and the run goes on; MAX_NONFINITE_IN_A_ROW in a row stop it like --on-nonfinite stop."""
    original = train_module.train_step
    calls = {"n": 0}

    def nan_on_some(*args, **kwargs):
        loss = original(*args, **kwargs)
        calls["n"] += 1
        return loss * float("nan") if calls["n"] in (3, 4) else loss

    monkeypatch.setattr(train_module, "train_step", nan_on_some)
    out = tmp_path / "skip"
    assert _train_small(small_shards, out, tokenizer_file, "--steps", "6", "--on-nonfinite", "skip",
                        "--workers", "0") == 0
    assert calls["n"] == 8  # 6 steps + 2 skipped batches
    assert [r["step"] for r in _strict_lines(out / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    monkeypatch.setattr(train_module, "train_step", lambda *a, **k: original(*a, **k) * float("nan"))
    rc = _train_small(small_shards, tmp_path / "never", tokenizer_file, "--steps", "40", "--on-nonfinite", "skip",
                      "--workers", "0")
    err = capsys.readouterr().err
    assert rc == 1 and f"({train_module.MAX_NONFINITE_IN_A_ROW} batches in a row)" in err
    assert "no checkpoint was written yet" in err
    assert "--on-nonfinite skip" not in err  # it is already on: no advice to turn it on


def test_a_full_disk_at_the_checkpoint_is_one_line_and_leaves_no_temporary(small_shards, tokenizer_file, tmp_path,
                                                                           capsys, monkeypatch):
    import trainer.checkpoint as checkpoint_module

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"x" * 4096)
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    out = tmp_path / "run"
    assert _train_small(small_shards, out, tokenizer_file, "--steps", "2", "--workers", "0") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"wit train: error: cannot write {out / 'checkpoint.pt'}: ")
    assert not [p for p in out.iterdir() if ".tmp-" in p.name] and not (out / "checkpoint.pt").exists()


def test_train_never_writes_into_a_folder_it_does_not_own(small_shards, tokenizer_file, tmp_path, capsys):
    """Like every stage (wit_builder.core.run_folder): a folder holding someone else's files is refused unless
    --overwrite, a second writer is refused while the first holds the lock, and the run leaves its marker."""
    from wit_builder.core import run_folder

    out = tmp_path / "theirs"
    out.mkdir()
    (out / "metrics.jsonl").write_text("their own log\n")
    (out / "notes.txt").write_text("keep me")
    assert _train_small(small_shards, out, tokenizer_file, "--steps", "1", "--workers", "0") == 2
    err = capsys.readouterr().err
    assert "holds files that wit did not write" in err and "'notes.txt'" in err and "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl", "notes.txt"]
    with run_folder.FolderLock(str(out), "train"):
        assert _train_small(small_shards, out, tokenizer_file, "--steps", "1", "--workers", "0", "--overwrite") == 2
        assert "is being written by another run (command train" in capsys.readouterr().err
    assert _train_small(small_shards, out, tokenizer_file, "--steps", "1", "--workers", "0", "--overwrite") == 0
    assert (out / "notes.txt").read_text() == "keep me" and (out / run_folder.MARKER).exists()
    assert not (out / run_folder.LOCK).exists()
    # a run of ours from before run markers (only a run's own files) is still resumable
    (out / run_folder.MARKER).unlink()
    (out / "notes.txt").unlink()
    assert _train_small(small_shards, out, tokenizer_file, "--steps", "2", "--workers", "0", "--resume") == 0
