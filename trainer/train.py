"""``wit train``: contrastive CLIP training on WebDataset shards, on a CPU or on one or many GPUs (``torchrun``).

``train`` reads top to bottom as named steps: distributed setup, the checkpoint to continue from, the tokenizer,
model and optimizer (restored when resuming), data, the loop, the end (epoch accounting, loss curve, summary).
All writing happens on rank 0.

    wit train --shards out/demo/shards --out out/train --model tiny --batch-size 64 --steps 300
    torchrun --nproc_per_node 8 -m wit_builder.cli train --shards 'gs://bucket/{00000..00999}.tar' ... --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from trainer import distributed, languages
from trainer.atomic import remove_stale_temporaries, write_atomic
from trainer.balance import parse_language_caps
from trainer.checkpoint import (
    CHECKPOINT_NAME,
    TOKENIZER_NAME,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unwrap,
)
from trainer.config import ModelConfig, TextConfig, TrainConfig, model_config
from trainer.data import (
    Loader,
    batch_to_device,
    describe_epoch,
    make_plan,
    plan_differences,
    plan_fields,
    torchvision_gpu_decode_available,
)
from trainer.distributed import World
from trainer.loss import SIGLIP_SCALE_INIT, ClipLoss, SigLipLoss, make_loss
from trainer.model import CLIP, parameter_groups
from trainer.run_log import EPOCHS_NAME, LOSS_PLOT, METRICS_NAME, RunLog
from trainer.shards import DataError, resolve_shards
from trainer.tokenizer import Tokenizer
from wit_builder.core import options, run_folder
from wit_builder.core.errors import StageFailed, UsageError

log = logging.getLogger("wit.train")
# The files and folders a run writes into --out (t22 adds tokenizer_stats.json: per-language token figures)
RUN_FILES = (CHECKPOINT_NAME, TOKENIZER_NAME, METRICS_NAME, EPOCHS_NAME, LOSS_PLOT, languages.TOKENIZER_STATS)
RUN_FOLDERS = ("tensorboard",)
TOKENIZER_CAPTIONS = 2_000_000  # captions read to learn the BPE when no --tokenizer is given
# Settings a resume must keep: each changes the model or the data order. --steps and --warmup may change (the
# schedule is recomputed); the data plan is checked once it is built.
RESUME_KEEPS = ("model", "batch_size", "seed", "workers", "loss", "shuffle_buffer", "resampled", "per_query_cap",
                "balance", "language_caps")


OPTIONS = TrainConfig  # the flags, defaults and help are generated from its fields


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``wit train``'s flags, generated from ``TrainConfig``."""
    options.add_arguments(parser, OPTIONS)


def run(args: TrainConfig | argparse.Namespace, beam_argv: list[str]) -> int:
    """``wit train``: exit 0 done, 128 + the signal when stopped with a checkpoint (143 SIGTERM, 130 SIGINT).

    Raises UsageError for bad options or an ``--out`` that cannot be a folder, DataError for data or a checkpoint
    that cannot be used, FileNotFoundError for a missing input: ``wit`` prints each as one line and exits 2.
    """
    try:
        cfg = args if isinstance(args, TrainConfig) else options.from_namespace(TrainConfig, args)
        options.check_out_folder(cfg.out)
    except ValueError as e:
        raise UsageError(str(e)) from e
    return train(cfg)


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """The learning-rate factor per step (LambdaLR): linear warm-up over ``warmup`` steps to 1, then cosine decay
    to 0 at step ``total`` (open_clip's ``cosine_lr``)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


@dataclass
class TrainState:
    """What the loop trains and a checkpoint saves: the architecture and tokenizer, the model (plain, and
    ``wrapped`` in DDP and/or torch.compile: what the loop calls), the loss (SigLIP's has a parameter), the
    optimizer and its schedule, and ``step``, the optimizer steps done."""

    arch: ModelConfig
    tokenizer: Tokenizer
    model: CLIP
    wrapped: torch.nn.Module
    loss_fn: ClipLoss | SigLipLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    step: int


@dataclass
class _Window:
    """Since the last metrics line: when it started, the seconds spent waiting for data, the samples trained by
    all ranks."""

    start: float = field(default_factory=time.perf_counter)
    wait: float = 0.0
    samples: int = 0


def train(cfg: TrainConfig) -> int:
    """Train (or ``--resume``) one run into ``cfg.out`` on this process's rank; returns the exit code: 0, or
    128 + the signal that stopped the run (after a checkpoint at the step it was in).

    Raises DataError for data or a checkpoint that cannot be used (a bad resume, shards on some nodes only, no
    CUDA device for ``--device cuda``).
    """
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda but no CUDA device is visible; use --device cpu")
    with distributed.process_group(cfg.device) as world, contextlib.ExitStack() as held:
        if cfg.batch_size % world.size:
            raise DataError(f"--batch-size {cfg.batch_size} does not split over {world.size} ranks")
        out = Path(cfg.out)
        if world.master:
            held.callback(_claim_out(out, cfg.overwrite).release)
            # a killed or failed run's half-written temporaries (ours by name, their process gone)
            for stale in remove_stale_temporaries(out, RUN_FILES):
                log.info("removed %s, a temporary of an earlier run that did not finish", stale)
        checkpoint = out / CHECKPOINT_NAME
        state = _checkpoint_to_resume(cfg, checkpoint, world)
        arch = model_config(cfg.model)
        tokenizer = _tokenizer(cfg, state, arch.text, out, world)
        ts = _model_and_optimizer(cfg, arch.with_vocab_size(tokenizer.vocab_size), tokenizer, state, world)
        loader = _data(cfg, ts.arch.image_size, tokenizer, state, world)
        logs = RunLog(out, ts.step, world.master)
        with _stop_signals(world.master) as stop:
            loss_value = _loop(cfg, world, ts, loader, logs, stop, checkpoint)
            if ts.step < cfg.steps:  # stopped by a signal on some rank; the checkpoint of this step is written
                if world.master:
                    print(f"wit train: interrupted at step {ts.step}; rerun with --resume", file=sys.stderr,
                          flush=True)
                return 128 + (stop[0] if stop else signal.SIGTERM)
            _finish(cfg, world, loader, logs, ts.step, loss_value, checkpoint)
        return 0


# ---- the output folder: ours alone (run marker, one-writer lock; wit_builder.core.run_folder) ----

def _claim_out(out: Path, overwrite: bool) -> run_folder.FolderLock:
    """Create ``out``, refuse it when it holds files wit did not write (no run marker) or another command's
    output, unless ``--overwrite``; lock it for this run and write the run marker. A folder of a run from before
    run markers (only a run's own files) is taken as ours. UsageError names the folder, the files and the flag;
    another live ``wit train`` into the same folder is refused naming it."""
    names = os.listdir(out) if out.is_dir() else []
    marker = None
    if run_folder.MARKER in names:
        marker = run_folder.marker_command((out / run_folder.MARKER).read_bytes())
    earlier_run = marker is None and set(run_folder.foreign_names(names)) <= {*RUN_FILES, *RUN_FOLDERS}
    problem = run_folder.ownership_problem(str(out), "train", names, marker)
    if problem and not overwrite and not earlier_run:
        raise UsageError(problem)
    out.mkdir(parents=True, exist_ok=True)
    lock = run_folder.FolderLock(str(out), "train")
    try:
        lock.acquire()
    except run_folder.LockedError as e:
        raise UsageError(str(e)) from None
    if (note := lock.stale_note()) is not None:
        print(f"wit train: {note}", flush=True)
    marker_doc = json.dumps(run_folder.marker_document("train"), indent=2, sort_keys=True) + "\n"
    write_atomic(out / run_folder.MARKER, lambda tmp: tmp.write_text(marker_doc, encoding="utf-8"))
    return lock


# ---- the checkpoint to continue from ----

def _checkpoint_to_resume(cfg: TrainConfig, path: Path, world: World) -> dict | None:
    """The checkpoint at ``path`` to continue from (``--resume`` and it exists), else None. Raises DataError
    when it is on some nodes only, unreadable, or from a run this one cannot continue, and when it exists
    without ``--resume`` (it would be overwritten)."""
    found = path.exists()
    if distributed.all_ranks_agree(found, op="any") and not distributed.all_ranks_agree(found, op="all"):
        raise DataError(f"{path} exists on some nodes only: --out must be a filesystem every node shares")
    if cfg.resume and found:
        try:
            state = read_checkpoint(path)
        except ValueError as e:
            raise DataError(f"{e}; remove it to start again, or choose another --out") from e
        _check_resumable(state, cfg, world.size)
        log.info("resuming from %s at step %d", path, state["step"])
        return state
    if cfg.resume:
        log.info("--resume: no %s yet, starting from scratch", path)
    elif found:
        raise DataError(f"{path} already exists; pass --resume to continue that run, or choose another --out")
    return None


def _check_resumable(state: dict, cfg: TrainConfig, world_size: int) -> None:
    """Refuse a resume that could not continue the same run: the data order or the model would differ."""
    old = state.get("train_config") or {}
    if state.get("world_size") != world_size:
        raise DataError(f"the checkpoint was written by {state.get('world_size')} rank(s), this run has "
                        f"{world_size}; resume with the same number of processes (or start a new --out)")
    if state["step"] > cfg.steps:
        raise DataError(f"the checkpoint is at step {state['step']}, past --steps {cfg.steps}; pass --steps "
                        f"{state['step']} or more to continue it")
    for key in RESUME_KEEPS:
        if key in ("per_query_cap", "balance", "language_caps") and key not in old:  # from before these options
            continue
        if old.get(key) != getattr(cfg, key):
            raise DataError(f"--{key.replace('_', '-')} is {getattr(cfg, key)!r} but the checkpoint ran with "
                            f"{old.get(key)!r}; resume with the same value (or start a new --out)")


# ---- tokenizer: the checkpoint's, the given one, or a BPE learnt from the captions ----

def _tokenizer(cfg: TrainConfig, state: dict | None, text: TextConfig, out: Path, world: World) -> Tokenizer:
    """The checkpoint's tokenizer, ``--tokenizer``, or a BPE learnt from the shards' captions (``--vocab-size``,
    else the text tower's), cut at the text tower's context length. A new run writes its tokens per caption per
    language to ``OUT/tokenizer_stats.json`` (``trainer.languages``). Raises DataError when resuming with a
    ``--tokenizer`` other than the checkpoint's."""
    if state is not None:
        tokenizer = Tokenizer.from_json(state["tokenizer"])
        if cfg.tokenizer and Tokenizer.load(cfg.tokenizer).fingerprint() != tokenizer.fingerprint():
            raise DataError(f"--tokenizer {cfg.tokenizer} is not the tokenizer the checkpoint was trained with; "
                            f"resume without --tokenizer (or start a new --out)")
    elif cfg.tokenizer:
        tokenizer = Tokenizer.load(cfg.tokenizer)
        if world.master:
            groups = languages.read_captions(resolve_shards(cfg.shards), languages.MEASURED_PER_LANGUAGE)
            _tokenizer_figures(languages.tokenizer_report(tokenizer.lengths, groups, text.context_length,
                                                          cfg.tokenizer, None), out)
    else:
        tokenizer = _learn_tokenizer(cfg.shards, out / TOKENIZER_NAME, cfg.vocab_size or text.vocab_size,
                                     text.context_length, world, cfg.seed)
    tokenizer.context_length = text.context_length
    return tokenizer


def _learn_tokenizer(shards: str, path: Path, vocab_size: int, context_length: int, world: World,
                     seed: int) -> Tokenizer:
    """Rank 0 learns a BPE from the first ``TOKENIZER_CAPTIONS`` captions, each language drawn with XLM's
    smoothed probability (``trainer.languages.smoothed_sample``), saves it to ``path`` and its figures per
    language beside it; the other ranks receive it."""
    learnt = None
    if world.master:
        started = time.perf_counter()
        groups = languages.read_captions(resolve_shards(shards), TOKENIZER_CAPTIONS)
        sample = languages.SampleReport(languages.SMOOTHING)
        tokenizer = Tokenizer.train(languages.smoothed_sample(groups, seed=seed, report=sample), vocab_size,
                                    context_length)
        tokenizer.save(path)
        log.info("learnt a %d-id BPE from the captions in %.1fs -> %s", tokenizer.vocab_size,
                 time.perf_counter() - started, path)
        _tokenizer_figures(languages.tokenizer_report(tokenizer.lengths, groups, context_length, "learnt", sample),
                           path.parent)
        if not world.ddp:
            return tokenizer
        learnt = tokenizer.to_json()
    # Sent to the other ranks rather than read back, so that nodes need not share OUT to start.
    learnt = distributed.broadcast(learnt)
    if learnt is None:
        raise DataError("rank 0 broadcast no tokenizer")
    return Tokenizer.from_json(learnt)


def _tokenizer_figures(report: dict, out: Path) -> None:
    """Write ``OUT/tokenizer_stats.json``, print one line per language and warn for the languages cut far more
    often than English at the context (rank 0)."""
    path = out / languages.TOKENIZER_STATS
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8"))
    for line in languages.describe_figures(report["languages"], report["context_length"]):
        print(f"wit train: tokenizer: {line}", flush=True)
    for sentence in report["unfair"].values():
        log.warning("%s: raise --vocab-size or pass a multilingual --tokenizer (%s)", sentence, path)


# ---- model, loss, optimizer, schedule (restored when resuming) ----

def _model_and_optimizer(cfg: TrainConfig, arch: ModelConfig, tokenizer: Tokenizer, state: dict | None,
                         world: World) -> TrainState:
    """A seeded CLIP of ``arch``, its loss and AdamW (no decay on gains, biases, temperature, SigLIP's bias) with
    the warm-up/cosine schedule; continued from ``state`` when resuming; wrapped for DDP and torch.compile."""
    torch.manual_seed(cfg.seed)
    model = CLIP(arch).to(world.device)
    loss_fn = make_loss(cfg.loss).to(world.device)
    if cfg.loss == "siglip":
        model.logit_scale.data.fill_(SIGLIP_SCALE_INIT)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    groups = parameter_groups(model, cfg.weight_decay)
    groups[1]["params"] += list(loss_fn.parameters())  # the SigLIP bias: no decay
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                                  fused=world.device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg.warmup, cfg.steps))
    ts = TrainState(arch, tokenizer, model, model, loss_fn, optimizer, scheduler, step=0)
    if state is not None:
        _restore(ts, state, cfg, world)
    if world.ddp:
        ts.wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[world.local_rank] if world.device.type == "cuda" else None)
    if cfg.compile:
        # torch.compile of a Module returns an OptimizedModule (a Module); its stub says only Callable.
        ts.wrapped = torch.compile(ts.wrapped)  # type: ignore[assignment]
    if world.master:
        n_params = sum(p.numel() for p in model.parameters())
        log.info("model %s: %.1fM parameters, vocab %d, %d rank(s), device %s", arch.name, n_params / 1e6,
                 tokenizer.vocab_size, world.size, world.device)
    return ts


def _restore(ts: TrainState, state: dict, cfg: TrainConfig, world: World) -> None:
    """Continue from a checkpoint: weights, the loss's parameters, optimizer, scheduler, step and this rank's
    random generators; then the learning rate where this run's schedule has it at that step."""
    ts.model.load_state_dict(state["model"])
    ts.loss_fn.load_state_dict(state["loss"])
    ts.optimizer.load_state_dict(state["optimizer"])
    ts.scheduler.load_state_dict(state["scheduler"])
    ts.step = state["step"]
    set_rng_state(state["rng_state"][world.rank])
    _continue_schedule(ts, state["train_config"], cfg, world.master)


def _continue_schedule(ts: TrainState, old_cfg: dict, cfg: TrainConfig, master: bool) -> None:
    """After loading a checkpoint: put the learning rate where this run's schedule has it at ``ts.step``. Only a
    changed --steps or --warmup (extending a run) moves it; the log says so."""
    schedule = warmup_cosine(cfg.warmup, cfg.steps)
    for group, base in zip(ts.optimizer.param_groups, ts.scheduler.base_lrs, strict=True):
        group["lr"] = base * schedule(ts.step)
    ts.scheduler._last_lr = [group["lr"] for group in ts.optimizer.param_groups]
    changed = {k: (old_cfg.get(k), getattr(cfg, k)) for k in ("steps", "warmup") if old_cfg.get(k) != getattr(cfg, k)}
    if changed and master:
        what = ", ".join(f"--{k} {a} -> {b}" for k, (a, b) in changed.items())
        log.warning("resuming at step %d with %s: the learning-rate schedule is recomputed over %d steps "
                    "(lr now %.3g)", ts.step, what, cfg.steps, ts.optimizer.param_groups[0]["lr"])
        print(f"wit train: {what}: learning-rate schedule recomputed over {cfg.steps} steps from step {ts.step}",
              flush=True)


# ---- data ----

def _data(cfg: TrainConfig, image_size: int, tokenizer: Tokenizer, state: dict | None, world: World) -> Loader:
    """This rank's loader (``trainer.data``), at the checkpoint's data position when resuming. Raises DataError
    when ``--gpu-decode`` cannot run here or the data would not continue in the checkpoint's order."""
    if cfg.gpu_decode and not torchvision_gpu_decode_available():
        raise DataError("--gpu-decode needs torchvision (a build matching torch 2.13) and a CUDA device")
    plan = make_plan(cfg.shards, batch_size=cfg.batch_size // world.size, image_size=image_size, seed=cfg.seed,
                     workers=cfg.workers, rank=world.rank, world_size=world.size, shuffle_buffer=cfg.shuffle_buffer,
                     resampled=cfg.resampled, samples_per_epoch=cfg.samples_per_epoch,
                     allow_repeat=cfg.allow_repeat, gpu_decode=cfg.gpu_decode, per_query_cap=cfg.per_query_cap,
                     balance_mode=cfg.balance,
                     language_caps=parse_language_caps(cfg.language_caps) if cfg.language_caps else None)
    if state is not None and state.get("data_plan") is not None:
        changes = plan_differences(state["data_plan"], plan_fields(plan))
        if changes:
            raise DataError("the data would not continue in the checkpoint's order: " + "; ".join(changes)
                            + ". Resume with the checkpoint's shards and options, or start a new --out")
    return Loader(plan, tokenizer, state["data_state"][world.rank] if state else None,
                  pin_memory=world.device.type == "cuda")


# ---- the loop ----

@contextlib.contextmanager
def _stop_signals(master: bool) -> Iterator[list[int]]:
    """SIGTERM (preemption, scancel, docker stop) and SIGINT (Ctrl-C) are appended to the yielded list instead of
    ending the process: the loop finishes its step, writes a checkpoint and ends, and the run exits with 128 +
    the signal's number (143, 130), as a shell reports a process killed by it. A second Ctrl-C quits at once,
    without a checkpoint. Installed in the main thread only; the previous handlers come back on exit."""
    received: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        if received and signum == signal.SIGINT:  # a second Ctrl-C: quit now, without a checkpoint
            raise KeyboardInterrupt
        if not received and master:
            print(f"wit train: {signal.Signals(signum).name}: stopping after this step with a checkpoint "
                  f"(Ctrl-C again quits without one)", file=sys.stderr, flush=True)
        received.append(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, on_signal)
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _loop(cfg: TrainConfig, world: World, ts: TrainState, loader: Loader, logs: RunLog, stop: list[int],
          checkpoint: Path) -> float:
    """Optimizer steps from ``ts.step`` to ``--steps``, or to the first step at which a rank holds a stop signal:
    a metrics line every ``--log-every`` steps and at the last, a checkpoint to ``checkpoint`` every
    ``--checkpoint-every`` steps, at the last and when stopping. Returns the loss of the last metrics line (nan
    before the first)."""
    autocast = torch.autocast(world.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    batches = iter(loader)
    loss_value = float("nan")
    ts.model.train()
    # A live bar only on an interactive terminal; logs and CI get the same numbers as plain lines.
    bar = tqdm(total=cfg.steps, initial=ts.step, unit="step", dynamic_ncols=True,
               disable=not (world.master and sys.stderr.isatty()))
    window = _Window()
    nonfinite = _NonFinite(cfg.on_nonfinite, world.master)
    try:
        while ts.step < cfg.steps:
            started = time.perf_counter()
            batch, epoch = next(batches)
            logs.epochs(loader.finished_epochs(), ts.step)
            images, tokens = batch_to_device(batch, loader.plan, world.device)  # (B, 3, S, S), (B, L)
            window.wait += time.perf_counter() - started
            lr = ts.optimizer.param_groups[0]["lr"]  # the rate this step runs at (the scheduler moves it after)
            loss = train_step(ts.wrapped, ts.loss_fn, images, tokens, cfg.accum_steps, autocast, world.ddp)
            grad_norm = _grad_norm(ts, cfg.grad_clip)
            finite = bool(torch.isfinite(loss.detach()).item() and torch.isfinite(grad_norm).item())
            if distributed.all_ranks_agree(not finite, op="any"):
                nonfinite.see(loss, grad_norm, ts.step, epoch, checkpoint)  # raises NonFiniteLoss unless skipping
                ts.optimizer.zero_grad(set_to_none=True)  # no step: the weights stay those of the last good step
                continue
            nonfinite.in_a_row = 0
            ts.optimizer.step()
            ts.optimizer.zero_grad(set_to_none=True)
            ts.scheduler.step()
            ts.step += 1
            bar.update(1)
            window.samples += images.shape[0] * world.size

            if ts.step % cfg.log_every == 0 or ts.step == cfg.steps:
                record = _metrics(ts, loader, window, epoch, lr, loss, world)  # every rank: collectives
                loss_value = record["loss"]
                if world.master:
                    _show(record, bar, cfg.steps)
                logs.metrics(record)
                window = _Window()

            stopping = distributed.all_ranks_agree(bool(stop), op="any")
            if ts.step % cfg.checkpoint_every == 0 or ts.step == cfg.steps or stopping:
                _checkpoint(checkpoint, cfg, ts, loader, world)
            if stopping:
                break
    finally:
        bar.close()
    return loss_value


MAX_NONFINITE_IN_A_ROW = 20  # --on-nonfinite skip: this many skipped batches in a row means the run diverged


class NonFiniteLoss(StageFailed):
    """The loss or a gradient turned nan/inf: the run stopped without writing that step (exit 1)."""


class _NonFinite:
    """What ``--on-nonfinite`` does with a batch whose loss or gradient norm is not finite (every rank agrees
    first): ``stop`` raises NonFiniteLoss before the optimizer step, so the checkpoint on disk stays the last
    good one; ``skip`` counts the batch and goes on without a step, until MAX_NONFINITE_IN_A_ROW in a row."""

    def __init__(self, policy: str, master: bool):
        self.policy, self.master = policy, master
        self.in_a_row = self.skipped = 0

    def see(self, loss: torch.Tensor, grad_norm: torch.Tensor, step: int, epoch: int, checkpoint: Path) -> None:
        what = f"loss {loss.item()}, gradient norm {grad_norm.item()}"
        self.in_a_row += 1
        self.skipped += 1
        if self.policy == "skip" and self.in_a_row < MAX_NONFINITE_IN_A_ROW:
            if self.master:
                log.warning("step %d (epoch %d): %s; batch skipped without an optimizer step (%d so far)",
                            step + 1, epoch, what, self.skipped)
            return
        kept = (f"{checkpoint} keeps step {_checkpoint_step(checkpoint)}, the last good one" if checkpoint.exists()
                else "no checkpoint was written yet")
        row = f" ({self.in_a_row} batches in a row)" if self.policy == "skip" else ""
        skip = "" if self.policy == "skip" else "; --on-nonfinite skip skips such batches"
        raise NonFiniteLoss(f"step {step + 1} (epoch {epoch}): {what}{row}; stopped, {kept}. Lower --lr, set "
                            f"--grad-clip or check the data{skip}")


def _grad_norm(ts: TrainState, clip: float) -> torch.Tensor:
    """The total norm of the model's and the loss's gradients (a scalar); the model's are clipped to ``clip``
    first when it is > 0 (``--grad-clip``; the norm returned is the one before clipping, as torch's)."""
    norms: list[torch.Tensor] = []
    grads = [p.grad for p in ts.loss_fn.parameters() if p.grad is not None]
    if clip > 0:
        norms.append(torch.nn.utils.clip_grad_norm_(ts.model.parameters(), clip))
    else:
        grads += [p.grad for p in ts.model.parameters() if p.grad is not None]
    if grads:
        norms.append(torch.nn.utils.get_total_norm(grads))
    if not norms:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))


def _checkpoint_step(path: Path) -> object:
    try:
        return read_checkpoint(path)["step"]
    except (ValueError, KeyError, FileNotFoundError):
        return "?"


def train_step(model: torch.nn.Module, loss_fn: ClipLoss | SigLipLoss, images: torch.Tensor, tokens: torch.Tensor,
               accum: int, autocast: Any, ddp: bool) -> torch.Tensor:
    """One batch's forward and backward: (B, 3, S, S) images and (B, L) tokens -> the scalar loss. With ``accum``
    > 1 the loss is still the whole batch's: features of all micro-batches are computed without gradient first,
    then each micro-batch is recomputed with gradient and put into the cached matrix (open_clip's accumulation;
    memory of a micro-batch, gradient of the batch)."""
    scale_grad = loss_fn.gradient_scale()
    if accum == 1:
        with autocast:
            image_features, text_features, logit_scale = model(images, tokens)
            loss = loss_fn(image_features, text_features, logit_scale)
        (loss * scale_grad).backward()
        if ddp:  # the loss is not inside DDP: average its own parameters' gradients (SigLIP's bias) by hand
            distributed.average_gradients(loss_fn)
        return loss
    image_chunks, token_chunks = images.chunk(accum), tokens.chunk(accum)
    with torch.no_grad(), autocast:
        cached = [model(i, t)[:2] for i, t in zip(image_chunks, token_chunks, strict=True)]
    try:
        for j, (i, t) in enumerate(zip(image_chunks, token_chunks, strict=True)):
            last = j == accum - 1
            sync = contextlib.nullcontext() if not ddp or last else distributed.no_sync(model)
            # The temperature's and the loss's own parameters' (SigLIP's bias) gradients are taken once, not
            # once per micro-batch: in the last one, the backward DDP synchronises (a model parameter without a
            # gradient there fails DDP's reduction).
            loss_fn.requires_grad_(last)
            with sync:
                with autocast:
                    image_j, text_j, logit_scale = model(i, t)
                    all_images = torch.cat([f[0] for f in cached[:j]] + [image_j] + [f[0] for f in cached[j + 1:]])
                    all_texts = torch.cat([f[1] for f in cached[:j]] + [text_j] + [f[1] for f in cached[j + 1:]])
                    loss = loss_fn(all_images, all_texts, logit_scale if last else logit_scale.detach())
                (loss * scale_grad).backward()
    finally:
        loss_fn.requires_grad_(True)
    if ddp:
        distributed.average_gradients(loss_fn)
    return loss


def _metrics(ts: TrainState, loader: Loader, window: _Window, epoch: int, lr: float, loss: torch.Tensor,
             world: World) -> dict:
    """The metrics line of this step, averaged over ranks: loss, learning rate, temperature, samples/s and the
    share of time spent waiting for data since the last line, samples dropped so far by reason."""
    loss_value = distributed.mean(loss.detach())
    elapsed = time.perf_counter() - window.start
    wait_share = distributed.mean(torch.tensor(window.wait / max(elapsed, 1e-9), device=world.device))
    return {"step": ts.step, "epoch": epoch, "loss": loss_value, "lr": lr, "logit_scale": ts.model.scale().item(),
            "samples_per_s": window.samples / max(elapsed, 1e-9), "data_wait": wait_share,
            "dropped": dict(loader.totals)}


def _show(record: dict, bar: tqdm, steps: int) -> None:
    """A metrics line on the progress bar and as one plain line on stdout."""
    step, loss_value, wait_share = record["step"], record["loss"], record["data_wait"]
    bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{record['samples_per_s']:.0f}",
                    data_wait=f"{100 * wait_share:.0f}%")
    tqdm.write(f"step {step}/{steps} [{100 * step // steps:3d}%] epoch {record['epoch']} "
               f"loss {loss_value:.4f} lr {record['lr']:.2e} {record['samples_per_s']:.0f} "
               f"samples/s data wait {100 * wait_share:.0f}%", file=sys.stdout)
    sys.stdout.flush()


def _checkpoint(path: Path, cfg: TrainConfig, ts: TrainState, loader: Loader, world: World) -> None:
    """Write the checkpoint of ``ts.step`` (rank 0) with every rank's data position and random generators; every
    rank waits for it."""
    data_states = distributed.all_gather(loader.state())
    rng_states = distributed.all_gather(rng_state())
    if world.master:
        started = time.perf_counter()
        save_checkpoint(path, model=ts.model, model_config=ts.arch, tokenizer=ts.tokenizer, step=ts.step,
                        optimizer=ts.optimizer, scheduler=ts.scheduler, train_config=vars(cfg).copy(),
                        data_state=data_states, rng_state=rng_states,
                        extra={"loss": unwrap(ts.loss_fn).state_dict(), "world_size": len(data_states),
                               "data_plan": plan_fields(loader.plan)})
        log.info("checkpoint at step %d -> %s (%.1fs)", ts.step, path, time.perf_counter() - started)
    distributed.barrier()


# ---- the end: summary, epoch accounting and loss curve ----

def _finish(cfg: TrainConfig, world: World, loader: Loader, logs: RunLog, step: int, loss_value: float,
            checkpoint: Path) -> None:
    """Record the epochs finished and the one in progress, draw the loss curve, print the summary (rank 0)."""
    current = loader.epoch_report()  # every rank takes part (a collective under DDP)
    logs.epochs(loader.finished_epochs(), step)
    left = logs.close(current, step)
    if world.master:
        print(f"wit train: {describe_epoch(current)}")
        print(f"wit train: {step} steps of {cfg.batch_size} on {world.size} rank(s); final loss {loss_value:.4f}; "
              f"samples left out {left or 'none'}; checkpoint {checkpoint}")
