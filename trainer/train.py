"""``wit train``: contrastive CLIP training on WebDataset shards, on a CPU or on one or many GPUs (``torchrun``).

Reads top to bottom: configuration, distributed setup, checkpoint to resume from, tokenizer, model and optimizer,
data, the loop, the final checkpoint and plots. All writing happens on rank 0.

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
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from trainer.atomic import write_atomic
from trainer.checkpoint import CHECKPOINT_NAME, TOKENIZER_NAME, read_checkpoint, save_checkpoint, unwrap
from trainer.config import TrainConfig, model_config
from trainer.data import (
    DataError,
    Loader,
    all_ranks_agree,
    batch_to_device,
    describe_epoch,
    make_plan,
    plan_differences,
    plan_fields,
    raw_samples,
    resolve_shards,
    torchvision_gpu_decode_available,
)
from trainer.loss import SIGLIP_SCALE_INIT, ClipLoss, SigLipLoss, make_loss
from trainer.model import CLIP, parameter_groups
from trainer.tokenizer import Tokenizer
from wit_builder.core import options

log = logging.getLogger("wit.train")
METRICS_NAME = "metrics.jsonl"
EPOCHS_NAME = "epochs.jsonl"  # one line per finished epoch: samples planned, trained and left out by reason
TOKENIZER_CAPTIONS = 2_000_000  # captions read to learn the BPE when no --tokenizer is given


OPTIONS = TrainConfig  # the flags, defaults and help are generated from its fields


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``wit train``'s flags, generated from ``TrainConfig``."""
    options.add_arguments(parser, OPTIONS)


def run(args: argparse.Namespace, beam_argv: list[str]) -> int:
    """``wit train``: exit 0 done, 2 bad options or data (one line on stderr), 128 + signal when stopped."""
    try:
        cfg = args if isinstance(args, TrainConfig) else options.from_namespace(TrainConfig, args)
        options.check_out_folder(cfg.out)
    except ValueError as e:
        print(f"wit train: error: {e}", file=sys.stderr)
        return 2
    try:
        return train(cfg)
    except (DataError, FileNotFoundError) as e:
        print(f"wit train: error: {e}", file=sys.stderr)
        return 2


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """The learning-rate factor per step (LambdaLR): linear warm-up over ``warmup`` steps to 1, then cosine decay
    to 0 at step ``total`` (open_clip's ``cosine_lr``)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def train(cfg: TrainConfig) -> int:
    """Train (or ``--resume``) one run into ``cfg.out`` on this process's rank; returns the exit code.

    Raises DataError for data or a checkpoint that cannot be used (a bad resume, shards on some nodes only, no
    CUDA device for ``--device cuda``).
    """
    # ---- distributed setup (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) ----
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ddp = world > 1
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda but no CUDA device is visible; use --device cpu")
    if ddp:
        dist.init_process_group(backend="nccl" if cfg.device == "cuda" else "gloo", init_method="env://")
    rank, local_rank = (dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))) if ddp else (0, 0)
    master = rank == 0
    device = torch.device(f"cuda:{local_rank}" if cfg.device == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if cfg.batch_size % world:
        raise DataError(f"--batch-size {cfg.batch_size} does not split over {world} ranks")
    local_batch = cfg.batch_size // world
    out = Path(cfg.out)
    ckpt_path = out / CHECKPOINT_NAME
    if master:
        out.mkdir(parents=True, exist_ok=True)

    # ---- the checkpoint to continue from ----
    state = None
    found = ckpt_path.exists()
    if all_ranks_agree(found, op="any") and not all_ranks_agree(found, op="all"):
        raise DataError(f"{ckpt_path} exists on some nodes only: --out must be a filesystem every node shares")
    if cfg.resume and found:
        try:
            state = read_checkpoint(ckpt_path)
        except ValueError as e:
            raise DataError(f"{e}; remove it to start again, or choose another --out") from e
        _check_resumable(state, cfg, world)
        log.info("resuming from %s at step %d", ckpt_path, state["step"])
    elif cfg.resume:
        log.info("--resume: no %s yet, starting from scratch", ckpt_path)
    elif found:
        raise DataError(f"{ckpt_path} already exists; pass --resume to continue that run, or choose another --out")

    # ---- tokenizer: the checkpoint's, the given one, or a BPE learnt from the captions ----
    arch = model_config(cfg.model)
    if state is not None:
        tokenizer = Tokenizer.from_json(state["tokenizer"])
    elif cfg.tokenizer:
        tokenizer = Tokenizer.load(cfg.tokenizer)
    else:
        tokenizer = _learn_tokenizer(cfg, out, master, ddp, cfg.vocab_size or arch.text.vocab_size,
                                     arch.text.context_length)
    arch = arch.with_vocab_size(tokenizer.vocab_size)
    tokenizer.context_length = arch.text.context_length

    # ---- model, loss, optimizer, schedule ----
    torch.manual_seed(cfg.seed)
    model = CLIP(arch).to(device)
    loss_fn = make_loss(cfg.loss).to(device)
    if cfg.loss == "siglip":
        model.logit_scale.data.fill_(SIGLIP_SCALE_INIT)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    groups = parameter_groups(model, cfg.weight_decay)
    groups[1]["params"] += list(loss_fn.parameters())  # the SigLIP bias: no decay
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                                  fused=device.type == "cuda")
    schedule = warmup_cosine(cfg.warmup, cfg.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        _set_rng_state(state["rng_state"][rank])
        _continue_schedule(optimizer, scheduler, schedule, step, state["train_config"], cfg, master)
    train_model: torch.nn.Module = model
    if ddp:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None)
    if cfg.compile:
        # torch.compile of a Module returns an OptimizedModule (a Module); its stub says only Callable.
        train_model = torch.compile(train_model)  # type: ignore[assignment]
    if master:
        n_params = sum(p.numel() for p in model.parameters())
        log.info("model %s: %.1fM parameters, vocab %d, %d rank(s), device %s", arch.name, n_params / 1e6,
                 tokenizer.vocab_size, world, device)

    # ---- data ----
    if cfg.gpu_decode and not torchvision_gpu_decode_available():
        raise DataError("--gpu-decode needs torchvision (a build matching torch 2.13) and a CUDA device")
    plan = make_plan(cfg.shards, batch_size=local_batch, image_size=arch.image_size, seed=cfg.seed,
                     workers=cfg.workers, rank=rank, world_size=world, shuffle_buffer=cfg.shuffle_buffer,
                     resampled=cfg.resampled, samples_per_epoch=cfg.samples_per_epoch,
                     allow_repeat=cfg.allow_repeat, gpu_decode=cfg.gpu_decode, per_query_cap=cfg.per_query_cap,
                     balance_mode=cfg.balance)
    if state is not None and state.get("data_plan") is not None:
        changes = plan_differences(state["data_plan"], plan_fields(plan))
        if changes:
            raise DataError("the data would not continue in the checkpoint's order: " + "; ".join(changes)
                            + ". Resume with the checkpoint's shards and options, or start a new --out")
    loader = Loader(plan, tokenizer, state["data_state"][rank] if state else None,
                    pin_memory=device.type == "cuda")
    batches = iter(loader)
    metrics_path, epochs_path = out / METRICS_NAME, out / EPOCHS_NAME
    if master:
        _truncate_metrics(metrics_path, step)
        # An epoch line carries the steps done when its end was seen, after that step's checkpoint: keep < step.
        _truncate_metrics(epochs_path, step - 1)
    board = _tensorboard(out) if master else None
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")

    # ---- the loop ----
    # SIGTERM (preemption, scancel, docker stop) and SIGINT (Ctrl-C) finish the step, write a checkpoint and exit
    # with 128 + the signal's number (143, 130), as a shell reports a process killed by it.
    stop_signal: list[int] = []
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {}

    def on_signal(signum: int, frame) -> None:
        if stop_signal and signum == signal.SIGINT:  # a second Ctrl-C: quit now, without a checkpoint
            raise KeyboardInterrupt
        if not stop_signal and master:
            print(f"wit train: {signal.Signals(signum).name}: stopping after this step with a checkpoint "
                  f"(Ctrl-C again quits without one)", file=sys.stderr, flush=True)
        stop_signal.append(signum)

    if in_main_thread:
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, on_signal)
    bar = None
    try:
        model.train()
        # A live bar only on an interactive terminal; logs and CI get the same numbers as plain lines.
        bar = tqdm(total=cfg.steps, initial=step, unit="step", dynamic_ncols=True,
                   disable=not (master and sys.stderr.isatty()))
        window_start, window_wait, window_samples = time.perf_counter(), 0.0, 0
        loss_value = float("nan")
        while step < cfg.steps:
            t0 = time.perf_counter()
            batch, epoch = next(batches)
            _write_epoch_reports(loader, epochs_path, step, master)
            images, tokens = batch_to_device(batch, plan, device)
            window_wait += time.perf_counter() - t0
            lr = optimizer.param_groups[0]["lr"]  # the rate this step runs at (the scheduler moves it after)
            loss = _train_step(train_model, loss_fn, images, tokens, cfg.accum_steps, autocast, ddp)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            bar.update(1)
            window_samples += images.shape[0] * world

            if step % cfg.log_every == 0 or step == cfg.steps:
                loss_value = _mean_over_ranks(loss.detach(), ddp)
                elapsed = time.perf_counter() - window_start
                wait_share = _mean_over_ranks(torch.tensor(window_wait / max(elapsed, 1e-9), device=device), ddp)
                record = {"step": step, "epoch": epoch, "loss": loss_value, "lr": lr,
                          "logit_scale": model.scale().item(), "samples_per_s": window_samples / max(elapsed, 1e-9),
                          "data_wait": wait_share, "dropped": dict(loader.totals)}
                if master:
                    bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{record['samples_per_s']:.0f}",
                                    data_wait=f"{100 * wait_share:.0f}%")
                    tqdm.write(f"step {step}/{cfg.steps} [{100 * step // cfg.steps:3d}%] epoch {epoch} "
                               f"loss {loss_value:.4f} lr {record['lr']:.2e} {record['samples_per_s']:.0f} "
                               f"samples/s data wait {100 * wait_share:.0f}%", file=sys.stdout)
                    sys.stdout.flush()
                    with open(metrics_path, "a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
                    if board is not None:
                        for key in ("loss", "lr", "logit_scale", "samples_per_s", "data_wait"):
                            board.add_scalar(f"train/{key}", record[key], step)
                window_start, window_wait, window_samples = time.perf_counter(), 0.0, 0

            stopping = all_ranks_agree(bool(stop_signal), op="any")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stopping:
                _checkpoint(ckpt_path, model, loss_fn, arch, tokenizer, step, optimizer, scheduler, cfg, plan,
                            loader, master, ddp)
            if stopping and step < cfg.steps:
                bar.close()
                if master:
                    print(f"wit train: interrupted at step {step}; rerun with --resume", file=sys.stderr, flush=True)
                return 128 + (stop_signal[0] if stop_signal else signal.SIGTERM)
        bar.close()

        # ---- the end: summary, epoch accounting and loss curve ----
        current = loader.epoch_report()  # every rank takes part (a collective under DDP)
        if master:
            _write_epoch_reports(loader, epochs_path, step, master)
            if current["complete"]:  # the run ended on the epoch's last step: that epoch is finished, record it
                with open(epochs_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": step, **current}) + "\n")
            left: dict[str, int] = {}
            for report in _read_jsonl(epochs_path) + ([] if current["complete"] else [current]):
                for reason, n in report["left_out"].items():
                    left[reason] = left.get(reason, 0) + n
            if metrics_path.exists():
                _plot_loss(metrics_path, out / "loss.png")
            if board is not None:
                board.close()
            print(f"wit train: {describe_epoch(current)}")
            print(f"wit train: {step} steps of {cfg.batch_size} on {world} rank(s); final loss {loss_value:.4f}; "
                  f"samples left out {left or 'none'}; checkpoint {ckpt_path}")
        return 0
    finally:
        if bar is not None:
            bar.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if ddp:
            dist.destroy_process_group()


def _write_epoch_reports(loader: Loader, path: Path, step: int, master: bool) -> None:
    """Append the epochs the loader finished to epochs.jsonl (one JSON line each) and print them."""
    reports, loader.reports = loader.reports, []
    if not master:
        return
    for report in reports:
        tqdm.write(f"wit train: {describe_epoch(report)}", file=sys.stdout)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **report}) + "\n")


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _continue_schedule(optimizer: torch.optim.Optimizer, scheduler, schedule, step: int, old_cfg: dict,
                       cfg: TrainConfig, master: bool) -> None:
    """After loading a checkpoint: put the learning rate where this run's schedule has it at ``step``. Only a
    changed --steps or --warmup (extending a run) moves it; the log says so."""
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = base * schedule(step)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    changed = {k: (old_cfg.get(k), getattr(cfg, k)) for k in ("steps", "warmup") if old_cfg.get(k) != getattr(cfg, k)}
    if changed and master:
        what = ", ".join(f"--{k} {a} -> {b}" for k, (a, b) in changed.items())
        log.warning("resuming at step %d with %s: the learning-rate schedule is recomputed over %d steps "
                    "(lr now %.3g)", step, what, cfg.steps, optimizer.param_groups[0]["lr"])
        print(f"wit train: {what}: learning-rate schedule recomputed over {cfg.steps} steps from step {step}",
              flush=True)


def _train_step(model: torch.nn.Module, loss_fn: ClipLoss | SigLipLoss, images: torch.Tensor, tokens: torch.Tensor,
                accum: int, autocast, ddp: bool) -> torch.Tensor:
    """One batch's forward and backward. With ``accum`` > 1 the loss is still the whole batch's: features of all
    micro-batches are computed without gradient first, then each micro-batch is recomputed with gradient and
    put into the cached matrix (open_clip's accumulation; memory of a micro-batch, gradient of the batch)."""
    scale_grad = loss_fn.gradient_scale()
    if accum == 1:
        with autocast:
            image_features, text_features, logit_scale = model(images, tokens)
            loss = loss_fn(image_features, text_features, logit_scale)
        (loss * scale_grad).backward()
        _average_loss_gradients(loss_fn, ddp)
        return loss
    image_chunks, token_chunks = images.chunk(accum), tokens.chunk(accum)
    with torch.no_grad(), autocast:
        cached = [model(i, t)[:2] for i, t in zip(image_chunks, token_chunks, strict=True)]
    try:
        for j, (i, t) in enumerate(zip(image_chunks, token_chunks, strict=True)):
            last = j == accum - 1
            sync = contextlib.nullcontext() if not ddp or last else _no_sync(model)
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
    _average_loss_gradients(loss_fn, ddp)
    return loss


def _average_loss_gradients(loss_fn: torch.nn.Module, ddp: bool) -> None:
    """Average the loss's own parameters' gradients (SigLIP's bias) over ranks, as DDP does for the model's:
    the loss is not inside DDP, so without this each rank would step its own bias."""
    if not ddp:
        return
    for p in loss_fn.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def _no_sync(model: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
    """DDP's ``no_sync`` (this backward keeps its gradients local) of ``model``: a DDP or a compiled DDP."""
    while not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        inner = getattr(model, "_orig_mod", None)  # torch.compile's wrapper
        if not isinstance(inner, torch.nn.Module):
            raise TypeError(f"gradient accumulation under DDP needs a DistributedDataParallel model, "
                            f"got {type(model).__name__}")
        model = inner
    return model.no_sync()


def _mean_over_ranks(value: torch.Tensor, ddp: bool) -> float:
    if ddp:
        value = value.detach().clone().float()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return float(value)


def _learn_tokenizer(cfg: TrainConfig, out: Path, master: bool, ddp: bool, vocab_size: int,
                     context_length: int) -> Tokenizer:
    path = out / TOKENIZER_NAME
    if master:
        def captions():
            samples = raw_samples(iter(resolve_shards(cfg.shards)), lambda e: True)
            for sample in islice(samples, TOKENIZER_CAPTIONS):
                if "txt" in sample:
                    yield sample["txt"].decode("utf-8", "replace")

        started = time.perf_counter()
        tokenizer = Tokenizer.train(captions(), vocab_size, context_length)
        tokenizer.save(path)
        log.info("learnt a %d-id BPE from the captions in %.1fs -> %s", tokenizer.vocab_size,
                 time.perf_counter() - started, path)
    if not ddp:
        return tokenizer
    # Sent to the other ranks rather than read back, so that nodes need not share OUT to start.
    message = [tokenizer.to_json() if master else None]
    dist.broadcast_object_list(message, src=0)
    if message[0] is None:
        raise DataError("rank 0 broadcast no tokenizer")
    return Tokenizer.from_json(message[0])


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if s["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _gather(obj, ddp: bool) -> list:
    if not ddp:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _checkpoint(path: Path, model, loss_fn, arch, tokenizer, step, optimizer, scheduler, cfg: TrainConfig, plan,
                loader: Loader, master: bool, ddp: bool) -> None:
    data_states = _gather(loader.state(), ddp)
    rng_states = _gather(_rng_state(), ddp)
    if master:
        started = time.perf_counter()
        save_checkpoint(path, model=model, model_config=arch, tokenizer=tokenizer, step=step, optimizer=optimizer,
                        scheduler=scheduler, train_config=vars(cfg).copy(), data_state=data_states,
                        rng_state=rng_states,
                        extra={"loss": unwrap(loss_fn).state_dict(), "world_size": len(data_states),
                               "data_plan": plan_fields(plan)})
        log.info("checkpoint at step %d -> %s (%.1fs)", step, path, time.perf_counter() - started)
    if ddp:
        dist.barrier()


def _check_resumable(state: dict, cfg: TrainConfig, world: int) -> None:
    """Refuse a resume that could not continue the same run: the data order or the model would differ."""
    old = state.get("train_config") or {}
    if state.get("world_size") != world:
        raise DataError(f"the checkpoint was written by {state.get('world_size')} rank(s), this run has {world}; "
                        f"resume with the same number of processes (or start a new --out)")
    if state["step"] > cfg.steps:
        raise DataError(f"the checkpoint is at step {state['step']}, past --steps {cfg.steps}; pass --steps "
                        f"{state['step']} or more to continue it")
    # --steps and --warmup may change (the schedule is recomputed); the data plan is checked once it is built.
    for key in ("model", "batch_size", "seed", "workers", "loss", "shuffle_buffer", "resampled", "per_query_cap",
                "balance"):
        if key in ("per_query_cap", "balance") and key not in old:  # checkpoints from before load-time balance
            continue
        if old.get(key) != getattr(cfg, key):
            raise DataError(f"--{key.replace('_', '-')} is {getattr(cfg, key)!r} but the checkpoint ran with "
                            f"{old.get(key)!r}; resume with the same value (or start a new --out)")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from, so metrics.jsonl reads as one run."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    write_atomic(path, lambda tmp: tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8"))


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _plot_loss(metrics_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["step"] for r in records], [r["loss"] for r in records])
    ax.set_xlabel("step")
    ax.set_ylabel("contrastive loss")
    ax.set_title("wit train")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    write_atomic(png, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
